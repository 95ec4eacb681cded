using RLHFSpec.Compute.Generation.Selection;
using System.CommandLine;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Rlhf;
using Spectre.Console;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec bench train</c>: the end-to-end RLHF benchmark of the issue — the default task, a few GRPO iterations,
/// run twice in one process from the same initial policy: the baseline (<c>--speculation off --reallocate off
/// --instances 1</c>, no draft model, so no draft refresh to pay) and the mission's techniques (<c>--speculation
/// adaptive --reallocate on --instances N</c> with the draft model and its refresh). The two runs' iterations
/// alternate (baseline 1, mission 1, baseline 2, …) so that machine noise and warm-up hit both; seconds per iteration
/// per stage, and their ratios, are the means over iterations 2..N (iteration 1 carries one-time costs: cost
/// profiling, session warm-up) — or iteration 1 alone when only one ran. Table, Markdown and a PNG bar plot.
/// </summary>
internal static class TrainBench
{
    private static readonly string[] Stages = ["generation", "inference", "training", "draft_refresh"];

    public static Command Create()
    {
        var model = CommonOptions.Model();
        var draft = CommonOptions.Draft();
        var set = CommonOptions.Set();
        var iterations = new Option<int>("--iterations") { Description = "Iterations per side", DefaultValueFactory = _ => 3 };
        var prompts = new Option<int>("--prompts-per-iteration") { Description = "Default-task prompts per iteration", DefaultValueFactory = _ => 8 };
        var samples = new Option<int>("--samples-per-prompt") { Description = "Samples per prompt", DefaultValueFactory = _ => 8 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens per response", DefaultValueFactory = _ => 256 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature", DefaultValueFactory = _ => 1.0 };
        var instances = new Option<int>("--instances") { Description = "Generation instances of the mission side (the baseline runs one); 1: speculation and draft refresh without reallocation", DefaultValueFactory = _ => 2 };
        var seed = new Option<int>("--seed") { Description = "Seed of prompts, sampling and training", DefaultValueFactory = _ => 1 };
        var tolerance = new Option<double>("--draft-refresh-tolerance")
        {
            Description = "The mission's draft_refresh_tolerance: distil the draft only when its acceptance fell this far below what the last refresh reached; -1: every iteration",
            DefaultValueFactory = _ => RlhfConfig.DefaultDraftRefreshTolerance,
        };
        var device = CommonOptions.Device();
        var ep = CommonOptions.Ep();
        var threads = CommonOptions.Threads();
        var costProfile = new Option<string?>("--cost-profile") { Description = "Cost profile JSON for adaptive: loaded if it exists, else measured and saved there" };
        var output = new Option<string?>("--out") { Description = "Keep the two run folders (metrics, plots, checkpoints) under this folder; default: a temporary folder, deleted" };
        var markdown = CommonOptions.Markdown();
        var plot = new Option<string?>("--plot") { Description = "PNG bar plot of seconds per iteration per stage, both sides" };
        var command = new Command("train", "End-to-end RLHF: speculation adaptive + reallocation on N instances vs both off on one, side by side")
        {
            model, draft, set, iterations, prompts, samples, maxNew, temperature, instances, seed, tolerance, device, ep, threads, costProfile, output, markdown, plot,
        };
        command.SetAction(r => Run(new Args(r.GetValue(model), r.GetValue(draft), r.GetValue(iterations), r.GetValue(prompts), r.GetValue(samples), r.GetValue(maxNew),
            r.GetValue(temperature), r.GetValue(instances), r.GetValue(seed), r.GetValue(device)!, r.GetValue(ep)!, r.GetValue(threads), r.GetValue(costProfile),
            r.GetValue(output), r.GetValue(markdown), r.GetValue(plot)) { Set = r.GetValue(set), DraftRefreshTolerance = r.GetValue(tolerance) }));
        return command;
    }

    private sealed record Args(string? Model, string? Draft, int Iterations, int Prompts, int Samples, int MaxNew, double Temperature, int Instances, int Seed,
        string Device, string Ep, int Threads, string? CostProfile, string? Out, string? Markdown, string? Plot)
    {
        /// <summary>--set: a named model set in place of --model.</summary>
        public string? Set { get; init; }

        public double DraftRefreshTolerance { get; init; } = RlhfConfig.DefaultDraftRefreshTolerance;
    }

    private sealed record Side(string Name, string Flags, RlhfConfig Config, string? DraftFolder);

    private static int Run(Args a)
    {
        OptionChecks.Positive(("--iterations", a.Iterations), ("--prompts-per-iteration", a.Prompts), ("--samples-per-prompt", a.Samples), ("--max-new-tokens", a.MaxNew));
        OptionChecks.Temperature(a.Temperature);
        OptionChecks.AtLeast("--instances", a.Instances, 1, "the mission side needs a generation instance");
        OptionChecks.Threads(a.Threads);
        if (!RlhfConfig.IsDraftRefreshTolerance(a.DraftRefreshTolerance))
            throw new ArgumentException($"--draft-refresh-tolerance: {a.DraftRefreshTolerance.ToString(CultureInfo.InvariantCulture)}, must be in [-1, 1] (-1: distil every iteration)");
        ExecutionProviders.Check(a.Ep);
        OutputPaths.Check(("--markdown", a.Markdown), ("--plot", a.Plot), ("--cost-profile", a.CostProfile is { } cp && File.Exists(cp) ? null : a.CostProfile));
        var (policyFolder, draftFolder) = ModelFolders.Resolve(a.Model, a.Draft, set: a.Set);
        if (draftFolder is null) throw new ArgumentException("--draft: the mission side needs a draft model folder");

        var common = new RlhfConfig
        {
            Iterations = a.Iterations, PromptsPerIteration = a.Prompts, SamplesPerPrompt = a.Samples, MaxNewTokens = a.MaxNew, Temperature = a.Temperature,
            Seed = a.Seed, Device = a.Device, Ep = a.Ep, Threads = a.Threads, CostProfile = a.CostProfile, CheckpointEvery = a.Iterations,
            // The benchmark times the four stages of an iteration; a held-out evaluation is not one of them.
            EvalEvery = 0, EvalBeforeTrain = false,
        };
        var sides = new[]
        {
            new Side("off", "--speculation off --reallocate off --instances 1", common with { Speculation = StrategyMode.Off, Reallocate = false, Instances = 1 }, null),
            // One instance has no one to move samples to: the mission is then speculation and the draft refresh alone
            // (what a single device runs; two instances on one CPU share its cores).
            new Side("mission", $"--speculation adaptive --reallocate {(a.Instances > 1 ? "on" : "off")} --instances {a.Instances}",
                common with { Speculation = StrategyMode.Adaptive, Reallocate = a.Instances > 1, Instances = a.Instances, DraftRefreshTolerance = a.DraftRefreshTolerance }, draftFolder),
        };
        foreach (var s in sides) s.Config.Validate();

        string root = a.Out ?? Path.Combine(Path.GetTempPath(), $"rlhfspec-bench-train-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        AnsiConsole.MarkupLine($"default task, {a.Iterations} iteration(s) × {a.Prompts} prompts × {a.Samples} samples, max {a.MaxNew} tokens, T = {a.Temperature.ToString(CultureInfo.InvariantCulture)}; " +
            $"policy {Markup.Escape(policyFolder)}, draft {Markup.Escape(draftFolder)}; iterations of the two sides alternate");
        var history = sides.ToDictionary(s => s.Name, _ => new List<IterationMetrics>());
        var trainers = new List<RlhfTrainer>();
        try
        {
            foreach (var s in sides) trainers.Add(new RlhfTrainer(s.Config, Path.Combine(root, s.Name), policyFolder, s.DraftFolder));
            for (int i = 1; i <= a.Iterations; i++)
                for (int k = 0; k < sides.Length; k++)
                {
                    var m = trainers[k].Run(stopAfter: 1)[0];
                    history[sides[k].Name].Add(m);
                    string draftText = m.DraftAcceptanceBefore is { } b
                        ? string.Create(CultureInfo.InvariantCulture, $", draft acceptance {b:F3}→{m.DraftAcceptanceAfter:F3}{(m.DraftRefreshed == true ? "" : " (not distilled)")}, draft's part of the refresh {m.DraftRefreshDraftSeconds:F2}s")
                        : "";
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {sides[k].Name} iter {m.Iteration}: {string.Join(", ", Stages.Select(st => $"{st} {m.Seconds.GetValueOrDefault(st):F2}s"))}; reward {m.RewardMean:F3}, gen {m.GenerationTokensPerSecond:F0} tok/s, migrations {m.Migrations}{draftText}"));
                }
        }
        finally
        {
            foreach (var t in trainers) t.Dispose();
            if (a.Out is null) Directory.Delete(root, recursive: true);
        }

        IterationMetrics[] Counted(string side) => (a.Iterations >= 2 ? history[side].Skip(1) : history[side]).ToArray();
        double Mean(string side, Func<IterationMetrics, double> f) => Counted(side).Average(f);
        var rows = Stages.Select(st => (st, (Func<IterationMetrics, double>)(m => m.Seconds.GetValueOrDefault(st))))
            .Append(("total", m => Stages.Sum(st => m.Seconds.GetValueOrDefault(st)))).ToArray();
        string counted = a.Iterations switch { 1 => "iteration 1", 2 => "iteration 2", _ => $"iterations 2–{a.Iterations}" };
        var table = new Table().Border(TableBorder.Rounded).AddColumns("stage (s per iteration)", $"off: {sides[0].Flags}", $"mission: {sides[1].Flags}", "off / mission");
        var md = new StringBuilder($"| stage, s per iteration ({counted}) | off: `{sides[0].Flags}` | mission: `{sides[1].Flags}` | off / mission |\n|---|---:|---:|---:|\n");
        foreach (var (name, f) in rows)
        {
            double off = Mean("off", f), mission = Mean("mission", f);
            string[] cells = [name, F(off, "F2"), F(mission, "F2"), mission > 0 ? F(off / mission, "F2") + "×" : "-"];
            table.AddRow(cells.Select(Markup.Escape).ToArray());
            md.Append("| ").Append(name == "total" ? "**end to end**" : name).Append(" | ").Append(string.Join(" | ", cells[1..])).Append(" |\n");
        }
        double draftPart = Mean("mission", m => m.DraftRefreshDraftSeconds ?? 0);
        string extra = string.Create(CultureInfo.InvariantCulture,
            $"generation tokens/s: off {Mean("off", m => m.GenerationTokensPerSecond):F0}, mission {Mean("mission", m => m.GenerationTokensPerSecond):F0}; " +
            $"mission: accepted per step {Mean("mission", m => m.MeanAcceptedPerStep):F2}, samples moved per iteration {Mean("mission", m => m.Migrations):F1}, " +
            $"draft acceptance {Mean("mission", m => m.DraftAcceptanceBefore ?? 0):F3} before the refresh, distilled in {Counted("mission").Count(m => m.DraftRefreshed == true)} of {Counted("mission").Length} iteration(s) " +
            $"(draft_refresh_tolerance {a.DraftRefreshTolerance}), the draft's part of the refresh {draftPart:F2} s = {draftPart / Mean("mission", rows[^1].Item2):P1} of the mission's iteration; " +
            $"mean reward over all iterations: off {history["off"].Average(m => m.RewardMean):F3}, mission {history["mission"].Average(m => m.RewardMean):F3}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine(Markup.Escape($"{counted}; " + extra));
        if (a.Markdown is not null) AtomicFile.WriteText(a.Markdown, md.Append('\n').Append(counted).Append("; ").Append(extra).Append('\n').ToString());
        if (a.Plot is not null) WritePlot(a.Plot, rows.Select(r => r.Item1).ToArray(), sides.Select(s => rows.Select(r => Mean(s.Name, r.Item2)).ToArray()).ToArray(),
            sides.Select(s => $"{s.Name}: {s.Flags}").ToArray(), counted);
        return 0;
    }

    private static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);

    /// <summary>Grouped bars: one group per stage (and the total), one bar per side. Written to a temporary file, then renamed.</summary>
    private static void WritePlot(string path, string[] stages, double[][] seconds, string[] legends, string counted)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int s = 0; s < seconds.Length; s++)
        {
            var positions = Enumerable.Range(0, stages.Length).Select(i => i * (seconds.Length + 1) + s + 0.0).ToArray();
            var bars = plot.Add.Bars(positions, seconds[s]);
            bars.Color = palette.GetColor(s);
            bars.LegendText = legends[s];
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, stages.Length).Select(i => i * (seconds.Length + 1) + (seconds.Length - 1) / 2.0).ToArray(), stages);
        plot.Axes.Margins(bottom: 0);
        plot.YLabel("seconds per iteration");
        plot.Title($"RLHF iteration, default task ({counted})");
        plot.ShowLegend();
        Rlhf.MetricsPlot.Save(plot, path);
    }
}
