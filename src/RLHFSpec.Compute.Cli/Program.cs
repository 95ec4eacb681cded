using System.CommandLine;
using RLHFSpec.Compute.Cli;
using RLHFSpec.Compute.Cli.Commands;

var root = new RootCommand("rlhfspec: RLHF generation accelerated by adaptive speculative decoding, on any GPU vendor");
root.Subcommands.Add(DevicesCommand.Create());
root.Subcommands.Add(SelfTestCommand.Create());
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(TrainRmCommand.Create());
root.Subcommands.Add(SimulateCommand.Create());
root.Subcommands.Add(PretrainCommand.Create());
root.Subcommands.Add(ExportCommand.Create());
return UserErrors.Run(() =>
{
    var parsed = root.Parse(args);
    if (parsed.Errors.Count > 0)
    {
        // One line, as for every user error.
        Console.Error.WriteLine($"rlhfspec: error: {string.Join("; ", parsed.Errors.Select(e => e.Message.TrimEnd('.')))} (see 'rlhfspec --help')");
        return UserErrors.ExitCode;
    }
    return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
});
