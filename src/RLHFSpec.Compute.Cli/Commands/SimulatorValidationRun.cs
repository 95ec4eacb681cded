using RLHFSpec.Compute.Generation.Selection;
using System.CommandLine;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Simulation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec simulate --validate</c>: the default task's workload generated for real on N instances (threads,
/// each with its own device queue, KV caches and sessions over shared weights), static and reallocated, after one
/// short warm-up run; each run's lengths and the cost profile the instances used drive the simulator for the same
/// setup; predicted vs measured completion time and the relative error, side by side.
/// </summary>
internal static class SimulatorValidationRun
{
    public sealed record Settings(string? Model, string? Set, string? Draft, int NumPrompts, int SamplesPerPrompt, int MaxNewTokens, float Temperature, string Strategy,
        string Device, string Ep, int Threads, int KvMemoryMiB, int MaxBatch, int Repeats);

    /// <summary>The generation options of <c>simulate --validate</c> (the names and defaults of <c>generate</c>'s).</summary>
    public sealed class Options
    {
        private readonly Option<string?> _model = CommonOptions.Model();
        private readonly Option<string?> _set = CommonOptions.Set();
        private readonly Option<string?> _draft = CommonOptions.Draft();
        private readonly Option<int> _prompts = new("--num-prompts") { Description = "With --validate: default-task prompts", DefaultValueFactory = _ => 16 };
        private readonly Option<int> _samples = new("--samples-per-prompt") { Description = "With --validate: samples per prompt", DefaultValueFactory = _ => 4 };
        private readonly Option<int> _maxNew = new("--max-new-tokens") { Description = "With --validate: most tokens per sample", DefaultValueFactory = _ => 256 };
        private readonly Option<float> _temperature = new("--temperature") { Description = "With --validate: sampling temperature", DefaultValueFactory = _ => 1f };
        private readonly Option<string> _strategy = new("--strategy") { Description = "With --validate: off | adaptive | a fixed strategy", DefaultValueFactory = _ => "adaptive" };
        private readonly Option<string> _device = CommonOptions.Device();
        private readonly Option<string> _ep = CommonOptions.Ep();
        private readonly Option<int> _threads = CommonOptions.Threads();
        private readonly Option<int> _kvMemory = new("--kv-memory-mib") { Description = "With --validate: KV cache memory per model, MiB", DefaultValueFactory = _ => 256 };
        private readonly Option<int> _maxBatch = new("--max-batch") { Description = "With --validate: most samples an instance decodes together", DefaultValueFactory = _ => 64 };
        private readonly Option<int> _repeats = new("--repeats") { Description = "With --validate: real runs per side, alternating; the fastest of each is checked", DefaultValueFactory = _ => 2 };

        private Options() { }

        public static Options Create() => new();

        public IEnumerable<Option> All => [_model, _set, _draft, _prompts, _samples, _maxNew, _temperature, _strategy, _device, _ep, _threads, _kvMemory, _maxBatch, _repeats];

        public Settings Read(ParseResult r) => new(r.GetValue(_model), r.GetValue(_set), r.GetValue(_draft), r.GetValue(_prompts), r.GetValue(_samples), r.GetValue(_maxNew),
            r.GetValue(_temperature), r.GetValue(_strategy)!, r.GetValue(_device)!, r.GetValue(_ep)!, r.GetValue(_threads), r.GetValue(_kvMemory), r.GetValue(_maxBatch), r.GetValue(_repeats));
    }

    public static int Run(Settings a, int instances, string? costProfile, int seed, string? markdown)
    {
        OptionChecks.Positive(("--num-prompts", a.NumPrompts), ("--samples-per-prompt", a.SamplesPerPrompt), ("--max-new-tokens", a.MaxNewTokens));
        OptionChecks.Temperature(a.Temperature);
        OptionChecks.Positive(("--kv-memory-mib", a.KvMemoryMiB), ("--max-batch", a.MaxBatch));
        OptionChecks.Threads(a.Threads);
        OptionChecks.Positive(("--repeats", a.Repeats));
        var settings = new GeneratorSettings { Strategy = StrategyMode.Parse(a.Strategy, "--strategy"), MaxBatch = a.MaxBatch, CostProfilePath = costProfile };
        settings.Validate();
        ExecutionProviders.Check(a.Ep);
        OutputPaths.Check(("--markdown", markdown), ("--cost-profile", costProfile is not null && File.Exists(costProfile) ? null : costProfile));
        // Instances share the cores: without --threads each gets its share (the profile is measured with the same share).
        int threads = a.Threads > 0 ? a.Threads : Math.Max(1, Environment.ProcessorCount / instances);
        var runtime = new TransformerOptions { KvMemoryBudgetBytes = (long)a.KvMemoryMiB << 20, Session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(a.Ep), IntraOpThreads = threads } };

        var (policyFolder, draftFolder) = ModelFolders.Resolve(a.Model, a.Draft, set: a.Set);
        using var models = GenerationModels.Load(policyFolder, draftFolder);
        var checkpoint = models.Checkpoint;
        using var fleet = models.Instances(a.Device, runtime);
        var (policy, draft) = fleet.Get(0); // instance 0's models also profile the cost model
        var generator = new Generator(policy, draft, settings with { StopTokens = checkpoint.StopTokenIds() });
        var promptIds = GenerateCommand.TaskPrompts(a.NumPrompts, (ulong)seed).Select(p => checkpoint.Tokenizer.Encode(p)).ToArray();
        var requests = GenerationRequests.For(promptIds, a.SamplesPerPrompt, a.MaxNewTokens, a.Temperature, 1f, (ulong)seed);
        // Warm-up: every prompt once, short, so sessions and the step loop's code are warm before anything is timed.
        var warmUp = GenerationRequests.For(promptIds, 1, Math.Min(32, a.MaxNewTokens), a.Temperature, 1f, (ulong)seed + 1, firstId: 1L << 40);
        var simulation = new SimulationOptions { KvBytesPerToken = InstanceModels.KvBytesPerToken((TransformerModel)policy) };
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        AnsiConsole.MarkupLine($"validating the simulator: {requests.Length} samples ({a.NumPrompts} default-task prompts × {a.SamplesPerPrompt}, max {a.MaxNewTokens} tokens, " +
            $"T = {a.Temperature.ToString(CultureInfo.InvariantCulture)}) on {instances} real instances ({threads} thread(s) each), {a.Repeats} run(s) per side, strategy {Markup.Escape(a.Strategy)}; policy {Markup.Escape(policyFolder)}");
        IReadOnlyList<SimulatorCheck> checks = [];
        AnsiConsole.MarkupLine($"load average before the runs: {Markup.Escape(LoadAverage())} on {Environment.ProcessorCount} cores");
        AnsiConsole.Status().Start("profiling (unless loaded), warming up, then generating static and reallocated", _ =>
            checks = SimulatorValidation.Run(generator, requests, instances, fleet.Get, new ClusterOptions(), simulation, warmUp, a.Repeats));
        var table = new Table().Border(TableBorder.Rounded).AddColumns("side", "measured s", "predicted s", "relative error", "moves measured", "moves predicted");
        var md = new StringBuilder("| side | measured s | predicted s | relative error | moves measured | moves predicted |\n|---|---:|---:|---:|---:|---:|\n");
        foreach (var c in checks)
        {
            string[] cells = [c.Side, c.MeasuredSeconds.ToString("F3", CultureInfo.InvariantCulture), c.PredictedSeconds.ToString("F3", CultureInfo.InvariantCulture),
                c.RelativeError.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture), c.MeasuredMoves.ToString(CultureInfo.InvariantCulture), c.PredictedMoves.ToString(CultureInfo.InvariantCulture)];
            table.AddRow(cells.Select(Markup.Escape).ToArray());
            md.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.Write(table);
        foreach (var c in checks)
            AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                $"  {c.Side}: busy s (all instances) measured {c.MeasuredBusySeconds:F2} (draft + verify forward {c.MeasuredForwardSeconds:F2}, prefill {c.MeasuredPrefillSeconds:F2}) / predicted {c.PredictedBusySeconds:F2}; steps {c.MeasuredSteps} / {c.PredictedSteps}; tokens per sample-step {c.MeasuredTokensPerSampleStep:F2} / {c.PredictedTokensPerSampleStep:F2}")));
        double measuredRatio = checks[0].MeasuredSeconds / checks[1].MeasuredSeconds, predictedRatio = checks[0].PredictedSeconds / checks[1].PredictedSeconds;
        string ratios = string.Create(CultureInfo.InvariantCulture, $"static / reallocated: measured {measuredRatio:F2}×, predicted {predictedRatio:F2}×");
        AnsiConsole.MarkupLine(Markup.Escape(ratios));
        if (markdown is not null) AtomicFile.WriteText(markdown, md.Append('\n').Append(ratios).Append('\n').ToString());
        return 0;
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
}
