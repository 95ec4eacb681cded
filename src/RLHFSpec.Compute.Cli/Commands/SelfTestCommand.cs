using System.CommandLine;
using RLHFSpec.Compute.Cli.SelfTest;
using RLHFSpec.Compute.Engine;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec selftest</c>: every kernel once on every device (or the ones named) against its plain C#
/// reference, one verdict per line; exit code 1 if any kernel disagrees.
/// </summary>
internal static class SelfTestCommand
{
    public static Command Create()
    {
        var device = new Option<string[]>("--device") { Description = "Devices to test (cpu, vulkan, vulkan:N); default: every device found", AllowMultipleArgumentsPerToken = true };
        var seed = new Option<int>("--seed") { Description = "Seed of the random inputs", DefaultValueFactory = _ => 1 };
        var command = new Command("selftest", "Run every kernel once on every device against its C# reference, one verdict per line") { device, seed };
        command.SetAction(result => Run(result.GetValue(device) ?? [], result.GetValue(seed)));
        return command;
    }

    private static IEnumerable<KernelCheck> Checks() =>
        SamplingChecks.All().Concat(TopTokensChecks.All()).Concat(AttentionChecks.All()).Concat(KvMoveChecks.All());

    private static int Run(string[] selectors, int seed)
    {
        // Verdicts are one line each, also when piped to a log (Spectre would wrap at 80 columns).
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 240;
        if (selectors.Length == 0)
        {
            var found = Devices.List(out var vulkanError);
            if (vulkanError != null) AnsiConsole.MarkupLine($"[yellow]Vulkan:[/] {Markup.Escape(vulkanError)}");
            selectors = found.Select(d => d.Id).ToArray();
        }
        int failures = 0, passes = 0;
        foreach (var selector in selectors)
        {
            using var backend = Devices.Open(selector);
            AnsiConsole.MarkupLine($"[bold]{Markup.Escape(backend.Info.Id)}[/]  {Markup.Escape(backend.Info.Name)}  ({Markup.Escape(backend.Info.Driver)})");
            foreach (var check in Checks())
            {
                var random = new Random(seed);
                string? failure;
                string agreement = "";
                try { failure = check.Run(backend, random, out agreement); }
                catch (Exception e) when (e is ComputeException or ArgumentException or NotImplementedException or InvalidOperationException)
                {
                    failure = $"{e.GetType().Name}: {e.Message}";
                }
                if (failure == null)
                {
                    passes++;
                    AnsiConsole.MarkupLine($"  [green]PASS[/]  {check.Kernel,-10} {Markup.Escape(check.Shape)}: {Markup.Escape(agreement)}");
                }
                else
                {
                    failures++;
                    AnsiConsole.MarkupLine($"  [red]FAIL[/]  {check.Kernel,-10} {Markup.Escape(check.Shape)}: {Markup.Escape(failure)}");
                }
            }
        }
        AnsiConsole.MarkupLine(failures == 0
            ? $"selftest: [green]all {passes} kernel checks match their references[/]"
            : $"selftest: [red]{failures} of {passes + failures} kernel checks disagree with their references[/]");
        return failures == 0 ? 0 : 1;
    }
}
