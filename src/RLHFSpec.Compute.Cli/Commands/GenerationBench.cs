using RLHFSpec.Compute.Generation.Selection;
using System.CommandLine;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec bench generation</c>: the default task as a GRPO-style workload (prompts × samples, long-tailed
/// lengths), generated with <c>off</c>, fixed strategies and <c>adaptive</c> side by side in one run on the same
/// models: tokens/s and its ratio to off, tokens per sample-step, draft acceptance; throughput per live batch size
/// (table and PNG plot).
/// </summary>
internal static class GenerationBench
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var draft = CommonOptions.Draft();
        var set = CommonOptions.Set();
        var prompts = new Option<int>("--num-prompts") { Description = "Prompts of the default task", DefaultValueFactory = _ => 64 };
        var samples = new Option<int>("--samples-per-prompt") { Description = "Samples per prompt", DefaultValueFactory = _ => 8 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens per sample", DefaultValueFactory = _ => 768 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature", DefaultValueFactory = _ => 1f };
        var strategies = new Option<string[]>("--strategies") { Description = "Strategies to compare (off is always first)", AllowMultipleArgumentsPerToken = true,
            DefaultValueFactory = _ => ["suffix:4", "chain:3", "tree:3,2,6", "adaptive"] };
        var device = CommonOptions.Device();
        var ep = CommonOptions.Ep();
        var threads = CommonOptions.Threads();
        var dense = CommonOptions.Dense();
        var seed = new Option<ulong>("--seed") { Description = "Seed of prompts and sampling", DefaultValueFactory = _ => 0UL };
        var markdown = CommonOptions.Markdown();
        var plot = new Option<string?>("--plot") { Description = "PNG plot of tokens/s against the live batch size" };
        var sweep = new Option<int[]>("--batch-sizes") { Description = "Forced batch-size sweep: this many samples at once, each of a fixed length (0 = no sweep)", AllowMultipleArgumentsPerToken = true,
            DefaultValueFactory = _ => [1, 4, 16, 64, 256] };
        var sweepTokens = new Option<int>("--sweep-tokens") { Description = "Tokens each sample of the sweep writes", DefaultValueFactory = _ => 64 };
        var sweepPlot = new Option<string?>("--sweep-plot") { Description = "PNG plot of the sweep: tokens/s against the forced batch size" };
        var repeats = new Option<int>("--repeats") { Description = "Rounds of the workload and of the sweep: each runs every strategy once (the order reversed every other round); ratios to off are per round, reported as the median and range", DefaultValueFactory = _ => 1 };
        var trace = new Option<string?>("--trace") { Description = "CSV of every timed decode step (run, strategy, live samples, rows, predicted and measured seconds, the selector's correction)" };
        var command = new Command("generation", "off, fixed strategies and adaptive side by side on a GRPO-style workload of the default task, then a forced batch-size sweep")
        {
            model, draft, set, prompts, samples, maxNew, temperature, strategies, device, ep, threads, dense, seed, markdown, plot, sweep, sweepTokens, sweepPlot, repeats, trace,
        };
        command.SetAction(r => Run(new GenerationBenchOptions
        {
            Model = r.GetValue(model), Draft = r.GetValue(draft), Set = r.GetValue(set),
            NumPrompts = r.GetValue(prompts), SamplesPerPrompt = r.GetValue(samples), MaxNewTokens = r.GetValue(maxNew), Temperature = r.GetValue(temperature),
            Strategies = r.GetValue(strategies) ?? [], Device = r.GetValue(device)!, Ep = r.GetValue(ep)!, Threads = r.GetValue(threads), Dense = r.GetValue(dense)!,
            Seed = r.GetValue(seed), Markdown = r.GetValue(markdown), Plot = r.GetValue(plot),
            BatchSizes = (r.GetValue(sweep) ?? []).Where(b => b != 0).ToArray(), SweepTokens = r.GetValue(sweepTokens), SweepPlot = r.GetValue(sweepPlot),
            Repeats = r.GetValue(repeats), Trace = r.GetValue(trace),
        }));
        return command;
    }

    /// <summary>A strategy's workload runs: <see cref="Stats"/> and <see cref="WallSeconds"/> over every round, and each round's tokens/s.</summary>
    private sealed record Row(string Strategy, GenerationStats Stats, double WallSeconds, double[] Rates);

    /// <summary>
    /// What every run of the bench shares (warm-up, workload and sweep): the strategies, <c>off</c> first; the models,
    /// loaded once and opened afresh on the one device for each run; the session, dense executor and stop tokens.
    /// </summary>
    private sealed record Bench(StrategyMode[] Strategies, GenerationModels Models, ComputeBackend Backend, OnnxSessionOptions Session,
        DenseExecutorKind Dense, IReadOnlySet<int> Stops)
    {
        /// <summary>Fresh models for one run, so no run learns from another.</summary>
        public ModelPair Open() => Models.Open(Backend, Runtime(Session, Dense));
    }

    /// <summary>The sweep's measurements per strategy and forced size: each round's tokens/s, the rounds pooled, the decode-time split.</summary>
    private sealed record SweepResults(double[,][] Rounds, (long Tokens, double Seconds)[,] Pooled, GenerationStats[,] Splits);

    private static int Run(GenerationBenchOptions options)
    {
        var (strategies, dense) = Check(options);
        var session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(options.Ep), IntraOpThreads = options.Threads };
        var (policyFolder, draftPath) = ModelFolders.Resolve(options.Model, options.Draft, set: options.Set);
        using var models = GenerationModels.Load(policyFolder, draftPath);
        var checkpoint = models.Checkpoint;
        using var backend = Devices.Open(options.Device);
        var promptIds = GenerateCommand.TaskPrompts(options.NumPrompts, options.Seed).Select(p => checkpoint.Tokenizer.Encode(p)).ToArray();
        var requests = GenerationRequests.For(promptIds, options.SamplesPerPrompt, options.MaxNewTokens, options.Temperature, 1f, options.Seed);
        var stops = checkpoint.StopTokenIds();
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        AnsiConsole.MarkupLine($"workload: {options.NumPrompts} default-task prompts × {options.SamplesPerPrompt} samples, max {options.MaxNewTokens} tokens, T = {options.Temperature}; policy {Markup.Escape(policyFolder)}" +
            (draftPath is null ? "" : $", draft {Markup.Escape(draftPath)}") + $"; device {Markup.Escape(backend.Info.Id)}");
        var bench = new Bench(strategies, models, backend, session, dense, stops);
        WarmUp(bench, promptIds, options);

        using var stepTrace = options.Trace is null ? null : new StepTraceFile(options.Trace);
        var rows = Workload(bench, requests, options.Repeats, stepTrace);
        var md = new StringBuilder();
        WriteWorkload(rows, md);
        var perBucket = ByLiveBatch(rows);
        WriteLiveBatches(rows, perBucket, md);
        if (options.Plot is not null) PlotLiveBatches(rows, perBucket, options.Plot);
        if (options.BatchSizes.Length > 0) Sweep(bench, options, md, stepTrace);
        if (options.Markdown is not null) AtomicFile.WriteText(options.Markdown, md.ToString());
        stepTrace?.Complete();
        return 0;
    }

    /// <summary>
    /// Every check of the options, before any work and in this order (the first failure is the one-line error):
    /// the strategies to run, <c>off</c> first, and the dense executor.
    /// </summary>
    private static (StrategyMode[] Strategies, DenseExecutorKind Dense) Check(GenerationBenchOptions options)
    {
        var dense = CommonOptions.ParseDense(options.Dense);
        if (options.NumPrompts < 1 || options.SamplesPerPrompt < 1 || options.MaxNewTokens < 1) throw new ArgumentException("--num-prompts, --samples-per-prompt and --max-new-tokens must be >= 1");
        if (options.BatchSizes.FirstOrDefault(b => b < 0) is var bad && bad < 0) throw new ArgumentException($"--batch-sizes: {bad}, must be >= 1 (0 = no sweep)");
        OptionChecks.Positive(("--sweep-tokens", options.SweepTokens), ("--repeats", options.Repeats));
        OptionChecks.Threads(options.Threads);
        var strategies = new[] { StrategyMode.Off }.Concat(options.Strategies.Select(s => StrategyMode.Parse(s, "--strategies")).Where(m => !m.IsOff)).ToArray();
        ExecutionProviders.Check(options.Ep);
        OutputPaths.Check(("--markdown", options.Markdown), ("--plot", options.Plot), ("--sweep-plot", options.BatchSizes.Length > 0 ? options.SweepPlot : null), ("--trace", options.Trace));
        return (strategies, dense);
    }

    /// <summary>
    /// Warm-up, untimed: every strategy's code paths, sessions and kernels run until the JIT has tiered them up,
    /// so the first strategy timed (off) is not charged for the process's start.
    /// </summary>
    private static void WarmUp(Bench bench, int[][] promptIds, GenerationBenchOptions options)
    {
        AnsiConsole.MarkupLine("warm-up (untimed) ...");
        var warmRequests = GenerationRequests.For(promptIds.Take(4).ToArray(), Math.Min(options.SamplesPerPrompt, 4), Math.Min(options.MaxNewTokens, 32), options.Temperature, 1f, options.Seed + 1);
        foreach (var strategy in bench.Strategies)
        {
            using var pair = bench.Open();
            var (policy, draft) = (pair.Policy, pair.Draft);
            var generator = new Generator(policy, draft, new GeneratorSettings { Strategy = strategy, StopTokens = bench.Stops, MaxBatch = 256 });
            var warm = System.Diagnostics.Stopwatch.StartNew();
            for (int w = 0; w < 3 || warm.Elapsed.TotalSeconds < 2; w++) generator.Run(warmRequests);
        }
    }

    /// <summary>
    /// The workload, <paramref name="repeats"/> rounds of every strategy (fresh models and generator each run, so no run
    /// learns from another); odd rounds take the strategies in reverse order, so a drift of the machine's speed
    /// during the rounds does not favour the strategies run first.
    /// </summary>
    private static List<Row> Workload(Bench bench, GenerationRequest[] requests, int repeats, StepTraceFile? trace)
    {
        var strategies = bench.Strategies;
        var stats = strategies.Select(_ => new GenerationStats()).ToArray();
        var wall = new double[strategies.Length];
        var rates = strategies.Select(_ => new double[repeats]).ToArray();
        for (int round = 0; round < repeats; round++)
            for (int n = 0; n < strategies.Length; n++)
            {
                int si = round % 2 == 0 ? n : strategies.Length - 1 - n;
                var strategy = strategies[si];
                using var pair = bench.Open();
                if (trace is not null) trace.Run = repeats == 1 ? strategy.ToString() : $"{strategy} round {round + 1}";
                var generator = new Generator(pair.Policy, pair.Draft, new GeneratorSettings { Strategy = strategy, StopTokens = bench.Stops, MaxBatch = 256, StepTrace = trace });
                GeneratorRunResult outcome = null!;
                AnsiConsole.Progress().AutoClear(true).Start(ctx =>
                {
                    var bar = ctx.AddTask(Markup.Escape(strategy.ToString()), maxValue: requests.Length);
                    outcome = generator.Run(requests, i => bar.Value = i.Finished.Count);
                });
                stats[si].Add(outcome.Stats);
                wall[si] += outcome.WallSeconds;
                rates[si][round] = outcome.Stats.TokensGenerated / outcome.WallSeconds;
                AnsiConsole.MarkupLine($"  {Markup.Escape(strategy.ToString())}" + (repeats > 1 ? $" (round {round + 1})" : "") + $": {rates[si][round]:F0} tokens/s");
            }
        return strategies.Select((s, si) => new Row(s.ToString(), stats[si], wall[si], rates[si])).ToList();
    }

    /// <summary>The workload's table, one row per strategy (see <see cref="RowCells"/>), on the console and as Markdown.</summary>
    private static void WriteWorkload(List<Row> rows, StringBuilder md)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumns("strategy", "tokens", "wall s", "tokens/s", "× off", "tokens per sample-step", "draft acceptance", "strategies taken");
        md.Append("| strategy | tokens | wall s | tokens/s | × off | tokens per sample-step | draft acceptance | strategies taken |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
        foreach (var row in rows)
        {
            string[] cells = RowCells(row, rows[0]);
            table.AddRow(cells.Select(Markup.Escape).ToArray());
            md.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.Write(table);
    }

    /// <summary>
    /// Throughput per live batch size (decode steps only), per strategy: the tokens emitted and the seconds of the
    /// steps taken at each size, summed over power-of-two buckets (a size counts in the first bucket it does not exceed).
    /// </summary>
    private static SortedDictionary<int, (double Emitted, double Seconds)>[] ByLiveBatch(List<Row> rows)
    {
        var sizes = new[] { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512 };
        int Bucket(int b) => sizes.First(s => b <= s);
        return rows.Select(r =>
        {
            var d = new SortedDictionary<int, (double Emitted, double Seconds)>();
            foreach (var (batch, (_, emitted, _)) in r.Stats.ByBatchSize)
            {
                int k = Bucket(batch);
                var (e, sec) = d.GetValueOrDefault(k);
                d[k] = (e + emitted, sec + r.Stats.SecondsByBatchSize.GetValueOrDefault(batch));
            }
            return d;
        }).ToArray();
    }

    /// <summary>The table of <see cref="ByLiveBatch"/>: tokens/s per bucket and strategy, on the console and as Markdown.</summary>
    private static void WriteLiveBatches(List<Row> rows, SortedDictionary<int, (double Emitted, double Seconds)>[] perBucket, StringBuilder md)
    {
        var buckets = perBucket.SelectMany(d => d.Keys).Distinct().Order().ToArray();
        var bt = new Table().Border(TableBorder.Rounded).AddColumn("live batch ≤");
        md.Append("\n| live batch ≤ | ").Append(string.Join(" | ", rows.Select(r => r.Strategy + " tok/s (share of decode time)"))).Append(" |\n|---:|").Append(string.Concat(rows.Select(_ => "---:|"))).Append('\n');
        foreach (var r in rows) bt.AddColumn(Markup.Escape(r.Strategy) + " tok/s (time share)");
        // Each cell also gives the bucket's share of the strategy's decode-step time: what bounds a workload's gain is
        // how long it spends at the batch sizes where speculation pays.
        var totals = perBucket.Select(d => d.Values.Sum(v => v.Seconds)).ToArray();
        foreach (int b in buckets)
        {
            var cells = perBucket.Select((d, i) => d.TryGetValue(b, out var v) && v.Seconds > 0
                ? $"{(v.Emitted / v.Seconds).ToString("F0", CultureInfo.InvariantCulture)} ({(v.Seconds / totals[i]).ToString("P0", CultureInfo.InvariantCulture)})" : "-").ToArray();
            bt.AddRow([b.ToString(CultureInfo.InvariantCulture), .. cells]);
            md.Append("| ").Append(b).Append(" | ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.Write(bt);
    }

    /// <summary>The PNG of <see cref="ByLiveBatch"/>: tokens/s against log2 of the live batch size, a line per strategy.</summary>
    private static void PlotLiveBatches(List<Row> rows, SortedDictionary<int, (double Emitted, double Seconds)>[] perBucket, string plotPath)
    {
        var plot = new ScottPlot.Plot();
        for (int i = 0; i < rows.Count; i++)
        {
            var pts = perBucket[i].Where(kv => kv.Value.Seconds > 0).ToArray();
            if (pts.Length == 0) continue;
            var line = plot.Add.Scatter(pts.Select(kv => Math.Log2(kv.Key)).ToArray(), pts.Select(kv => kv.Value.Emitted / kv.Value.Seconds).ToArray());
            line.LegendText = rows[i].Strategy;
        }
        plot.XLabel("log2(live batch size)");
        plot.YLabel("tokens/s (decode steps)");
        plot.Title("generation throughput vs live batch size");
        plot.ShowLegend();
        Rlhf.MetricsPlot.Save(plot, plotPath);
    }

    /// <summary>
    /// A strategy's table row: tokens and wall time over every round, tokens/s over them, and × off — with several
    /// rounds, the median of each round's ratio to that round's off run, and their range.
    /// </summary>
    private static string[] RowCells(Row row, Row off)
    {
        var c = CultureInfo.InvariantCulture;
        var s = row.Stats;
        double rate = s.TokensGenerated / row.WallSeconds;
        return [row.Strategy, s.TokensGenerated.ToString(c), row.WallSeconds.ToString("F1", c), rate.ToString("F0", c), Ratio(row.Rates, off.Rates),
            s.MeanEmittedPerSampleStep.ToString("F2", c), s.DraftTokensProposed == 0 ? "-" : s.AcceptanceRate.ToString("P0", c), Taken(s)];
    }

    /// <summary>The runtime of every timed run: the same KV budget, session and dense executor for each strategy.</summary>
    private static TransformerOptions Runtime(OnnxSessionOptions session, DenseExecutorKind dense) =>
        new() { KvMemoryBudgetBytes = 512L << 20, Session = session, Dense = dense };

    /// <summary>The strategies a run took most, each with its steps and its share of the decode time.</summary>
    private static string Taken(GenerationStats s)
    {
        double decode = s.DecodeSeconds;
        return string.Join(", ", s.StrategyHistogram.OrderByDescending(kv => kv.Value).Take(4).Select(kv =>
            $"{kv.Key} ×{kv.Value}" + (decode > 0 ? $" ({(s.SecondsByStrategy.GetValueOrDefault(kv.Key) / decode).ToString("P0", CultureInfo.InvariantCulture)} of decode)" : "")));
    }

    /// <summary>
    /// The forced batch-size sweep: for each size B, B samples admitted at once (default-task prompts with enough terms
    /// that no sample finishes before <c>--sweep-tokens</c> tokens, so the live batch stays B), each strategy on the
    /// same requests; one generator per strategy across sizes (adaptive keeps its start-up profile).
    /// </summary>
    private static void Sweep(Bench bench, GenerationBenchOptions options, StringBuilder md, StepTraceFile? trace)
    {
        var sizes = options.BatchSizes.Distinct().Order().ToArray();
        int tokens = options.SweepTokens;
        var (prompts, terms) = SweepPrompts(bench.Models.Checkpoint, sizes[^1], tokens, options.SamplesPerPrompt, options.Seed);
        AnsiConsole.MarkupLine($"batch-size sweep: {string.Join(", ", sizes)} samples at once, {tokens} tokens each ({terms}-term prompts, {options.SamplesPerPrompt} samples per prompt)");
        var results = SweepRounds(bench, prompts, sizes, options, trace);
        var rates = new double[bench.Strategies.Length, sizes.Length];
        for (int si = 0; si < bench.Strategies.Length; si++)
            for (int bi = 0; bi < sizes.Length; bi++) rates[si, bi] = results.Pooled[si, bi].Tokens / results.Pooled[si, bi].Seconds;
        WriteSweep(bench.Strategies, sizes, rates, results.Rounds, md);
        WriteSplit(bench.Strategies, sizes, results.Splits, md);
        if (options.SweepPlot is not null) PlotSweep(bench.Strategies, sizes, rates, tokens, options.SweepPlot);
    }

    /// <summary>Enough default-task prompts for the largest forced size, each with enough terms to write past <paramref name="tokens"/>.</summary>
    private static (int[][] Prompts, int Terms) SweepPrompts(Checkpoint checkpoint, int maxSize, int tokens, int samplesPerPrompt, ulong seed)
    {
        // Each worked step is ≥ 6 characters ("a+b=c;"), so terms ≥ tokens / 6 + 2 keep every sample writing past the limit.
        int terms = Math.Min(ArithmeticTask.MaxTerms, tokens / 6 + 2);
        var random = new Random(unchecked((int)seed + 17));
        var prompts = Enumerable.Range(0, (maxSize + samplesPerPrompt - 1) / samplesPerPrompt)
            .Select(_ => checkpoint.Tokenizer.Encode(ArithmeticTask.Make(Enumerable.Range(0, terms).Select(_ => random.Next(0, ArithmeticTask.MaxTerm + 1)).ToArray()).Prompt)).ToArray();
        return (prompts, terms);
    }

    /// <summary>The sweep's <c>--repeats</c> rounds: every strategy once per round, at every forced size in turn.</summary>
    private static SweepResults SweepRounds(Bench bench, int[][] prompts, int[] sizes, GenerationBenchOptions options, StepTraceFile? trace)
    {
        var strategies = bench.Strategies;
        int repeats = options.Repeats, maxSize = sizes[^1];
        var rounds = new double[strategies.Length, sizes.Length][];
        var pooled = new (long Tokens, double Seconds)[strategies.Length, sizes.Length];
        var taken = new string[strategies.Length, sizes.Length];
        var splits = new GenerationStats[strategies.Length, sizes.Length];
        for (int si = 0; si < strategies.Length; si++)
            for (int bi = 0; bi < sizes.Length; bi++) { rounds[si, bi] = new double[repeats]; splits[si, bi] = new GenerationStats(); }
        for (int round = 0; round < repeats; round++)
            for (int n = 0; n < strategies.Length; n++)
            {
                // Odd rounds reverse the order, as the workload's rounds do.
                int si = round % 2 == 0 ? n : strategies.Length - 1 - n;
                using var pair = bench.Open();
                var generator = new Generator(pair.Policy, pair.Draft, new GeneratorSettings { Strategy = strategies[si], StopTokens = bench.Stops, MaxBatch = Math.Max(256, maxSize), StepTrace = trace });
                for (int bi = 0; bi < sizes.Length; bi++)
                {
                    if (trace is not null) trace.Run = $"{strategies[si]} at batch {sizes[bi]}" + (repeats > 1 ? $" round {round + 1}" : "");
                    var (tokensDone, seconds, last) = SweepCell(generator, prompts, options.SamplesPerPrompt, sizes[bi], options.SweepTokens, options.Temperature, options.Seed, splits[si, bi]);
                    rounds[si, bi][round] = tokensDone / seconds;
                    pooled[si, bi] = (pooled[si, bi].Tokens + tokensDone, pooled[si, bi].Seconds + seconds);
                    taken[si, bi] = string.Join(" ", last.Stats.StrategyHistogram.OrderByDescending(kv => kv.Value).Take(3).Select(kv => $"{kv.Key}×{kv.Value}"));
                }
                AnsiConsole.MarkupLine(Markup.Escape($"  {strategies[si]}" + (repeats > 1 ? $" (round {round + 1})" : "") + ": " + string.Join(", ", sizes.Select((b, bi) =>
                    $"{b} → {rounds[si, bi][round]:F0} tok/s" + (strategies[si].IsAdaptive ? $" ({taken[si, bi]})" : "")))));
            }
        return new SweepResults(rounds, pooled, splits);
    }

    /// <summary>The sweep's table: tokens/s per forced size and strategy, pooled over the rounds, and × off per round (see <see cref="Ratio"/>).</summary>
    private static void WriteSweep(StrategyMode[] strategies, int[] sizes, double[,] rates, double[,][] rounds, StringBuilder md)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumn("batch");
        foreach (var s in strategies) table.AddColumn(Markup.Escape(s.ToString()) + " tok/s (× off)");
        md.Append("\n| forced batch | ").Append(string.Join(" | ", strategies.Select(s => s + " tok/s (× off)"))).Append(" |\n|---:|").Append(string.Concat(strategies.Select(_ => "---:|"))).Append('\n');
        for (int bi = 0; bi < sizes.Length; bi++)
        {
            var cells = Enumerable.Range(0, strategies.Length).Select(si => si == 0
                ? rates[0, bi].ToString("F0", CultureInfo.InvariantCulture)
                : $"{rates[si, bi].ToString("F0", CultureInfo.InvariantCulture)} ({Ratio(rounds[si, bi], rounds[0, bi])})").ToArray();
            table.AddRow([sizes[bi].ToString(CultureInfo.InvariantCulture), .. cells.Select(Markup.Escape)]);
            md.Append("| ").Append(sizes[bi]).Append(" | ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.Write(table);
    }

    /// <summary>The sweep's PNG: pooled tokens/s against log2 of the forced batch size, a line per strategy.</summary>
    private static void PlotSweep(StrategyMode[] strategies, int[] sizes, double[,] rates, int tokens, string plotPath)
    {
        var plot = new ScottPlot.Plot();
        for (int si = 0; si < strategies.Length; si++)
        {
            var line = plot.Add.Scatter(sizes.Select(b => Math.Log2(b)).ToArray(), Enumerable.Range(0, sizes.Length).Select(bi => rates[si, bi]).ToArray());
            line.LegendText = strategies[si].ToString();
        }
        plot.XLabel("log2(forced batch size)");
        plot.YLabel("tokens/s");
        plot.Title($"generation throughput, {tokens} tokens per sample");
        plot.ShowLegend();
        Rlhf.MetricsPlot.Save(plot, plotPath);
    }

    /// <summary>
    /// One forced batch: <paramref name="size"/> samples at once, repeated until a second of generation is timed, so
    /// short runs (batch 1) are not one noisy sample. Each repetition draws new random numbers: the suffix proposer
    /// indexes earlier rollouts, and a repetition with the same seed would find its whole response there.
    /// </summary>
    private static (long Tokens, double Seconds, GeneratorRunResult Last) SweepCell(Generator generator, int[][] prompts, int samplesPerPrompt, int size, int tokens,
        float temperature, ulong seed, GenerationStats split)
    {
        long tokensDone = 0;
        double seconds = 0;
        GeneratorRunResult outcome;
        ulong repetition = 0;
        do
        {
            var requests = GenerationRequests.For(prompts, samplesPerPrompt, tokens, temperature, 1f, seed + 7919 * repetition++).Take(size).ToArray();
            outcome = generator.Run(requests);
            split.Add(outcome.Stats);
            tokensDone += outcome.Stats.TokensGenerated;
            seconds += outcome.WallSeconds;
        }
        while (seconds < 1.0);
        return (tokensDone, seconds, outcome);
    }

    /// <summary>× off: one round's ratio, or the median of the rounds' ratios (each to that round's off) and their range.</summary>
    private static string Ratio(double[] rates, double[] offRates)
    {
        var c = CultureInfo.InvariantCulture;
        var ratios = rates.Select((r, i) => r / offRates[i]).Order().ToArray();
        if (ratios.Length == 1) return ratios[0].ToString("F2", c) + "×";
        return $"{BenchStatistics.Median(ratios).ToString("F2", c)}× ({ratios[0].ToString("F2", c)}–{ratios[^1].ToString("F2", c)}×)";
    }

    /// <summary>
    /// Where each forced batch's decode time went, per strategy: the draft (proposers and draft forwards), the verify
    /// forward, the verify kernel, and the rest of the step outside them (selection, reservation, commit, bookkeeping),
    /// as shares of the decode steps' time.
    /// </summary>
    private static void WriteSplit(StrategyMode[] strategies, int[] sizes, GenerationStats[,] splits, StringBuilder md)
    {
        static string Pct(double part, double whole) => whole > 0 ? (100 * part / whole).ToString("F1", CultureInfo.InvariantCulture) + " %" : "-";
        static string Cell(GenerationStats s) =>
            $"{Pct(s.DraftSeconds, s.DecodeSeconds)} / {Pct(s.VerifyForwardSeconds, s.DecodeSeconds)} / {Pct(s.VerifyKernelSeconds, s.DecodeSeconds)} / {Pct(s.OutsideForwardsSeconds, s.DecodeSeconds)}";
        var table = new Table().Border(TableBorder.Rounded).AddColumn("batch");
        foreach (var s in strategies) table.AddColumn(Markup.Escape(s.ToString()) + " draft / verify fwd / kernel / outside");
        md.Append("\n| forced batch | ").Append(string.Join(" | ", strategies.Select(s => s + ": draft / verify forward / verify kernel / outside"))).Append(" |\n|---:|")
            .Append(string.Concat(strategies.Select(_ => "---:|"))).Append('\n');
        for (int bi = 0; bi < sizes.Length; bi++)
        {
            var cells = Enumerable.Range(0, strategies.Length).Select(si => Cell(splits[si, bi])).ToArray();
            table.AddRow([sizes[bi].ToString(CultureInfo.InvariantCulture), .. cells.Select(Markup.Escape)]);
            md.Append("| ").Append(sizes[bi]).Append(" | ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.MarkupLine("time split of the decode steps (share of their time; outside = selection, reservation, commit and bookkeeping):");
        AnsiConsole.Write(table);
    }
}
