using System.CommandLine;
using RLHFSpec.Compute.Cli;
using RLHFSpec.Compute.Cli.Commands;

var root = new RootCommand("rlhfspec: RLHF generation accelerated by adaptive speculative decoding, on any GPU vendor");
root.Subcommands.Add(DevicesCommand.Create());
root.Subcommands.Add(SelfTestCommand.Create());
return UserErrors.Run(() => root.Parse(args).Invoke());
