using RLHFSpec.Compute.Generation.Selection;
using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.IO;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec generate</c>: the generation stage on its own — prompts (the default task's or a file's), several
/// samples each, speculative decoding with a fixed or adaptive strategy — writing one JSONL line per sample and a
/// stats JSON, with a progress bar and a summary table.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var draft = CommonOptions.Draft();
        var set = CommonOptions.Set();
        var prompts = new Option<string?>("--prompts") { Description = "Prompts file: JSONL with a 'prompt' field, or Parquet; default: prompts of the default task" };
        var numPrompts = new Option<int?>("--num-prompts") { Description = "Number of prompts (default: all of the file, or 16 task prompts)" };
        var samples = new Option<int>("--samples-per-prompt") { Description = "Samples per prompt", DefaultValueFactory = _ => 4 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens generated per sample", DefaultValueFactory = _ => 768 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature (0 = greedy)", DefaultValueFactory = _ => 1f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 1f };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sampling (and of the default task's prompts)", DefaultValueFactory = _ => 0UL };
        var strategy = new Option<string>("--strategy") { Description = "off | adaptive | chain:K | tree:D,K,B | suffix:K | suffix-tree:D,K,B", DefaultValueFactory = _ => "adaptive" };
        var device = CommonOptions.Device();
        var ep = CommonOptions.Ep();
        var threads = CommonOptions.Threads();
        var dense = CommonOptions.Dense();
        var kvDType = CommonOptions.KvDType();
        var kvMemory = new Option<int>("--kv-memory-mib") { Description = "KV cache memory budget of the policy, MiB", DefaultValueFactory = _ => 256 };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most samples decoded together", DefaultValueFactory = _ => 64 };
        var costProfile = new Option<string?>("--cost-profile") { Description = "Cost profile JSON: loaded (frozen) if it exists, else measured and saved there" };
        var output = new Option<string?>("--out") { Description = "Output JSONL, one line per sample" };
        var stats = new Option<string?>("--stats") { Description = "Stats JSON" };
        var trace = new Option<string?>("--trace") { Description = "CSV of every decode step (strategy, live samples, rows, predicted and measured seconds, the selector's correction)" };
        var instances = new Option<int>("--instances") { Description = "Generation instances (threads, each with its own KV cache and sessions over shared weights)", DefaultValueFactory = _ => 1 };
        var reallocate = new Option<string>("--reallocate") { Description = "on | off: move samples between instances when their loads diverge", DefaultValueFactory = _ => "off" };
        var command = new Command("generate", "Generate responses with speculative decoding (the RLHF generation stage)")
        {
            model, draft, prompts, numPrompts, samples, maxNew, temperature, topP, seed, strategy, device, ep, threads, dense, kvDType, kvMemory, maxBatch, costProfile, output, stats,
            instances, reallocate, set, trace,
        };
        command.SetAction(r => Run(new Args(
            r.GetValue(model), r.GetValue(draft), r.GetValue(prompts), r.GetValue(numPrompts), r.GetValue(samples), r.GetValue(maxNew),
            r.GetValue(temperature), r.GetValue(topP), r.GetValue(seed), r.GetValue(strategy)!, r.GetValue(device)!, r.GetValue(ep)!,
            r.GetValue(threads), r.GetValue(kvMemory), r.GetValue(maxBatch), r.GetValue(costProfile), r.GetValue(output), r.GetValue(stats),
            r.GetValue(instances), r.GetValue(reallocate)!, r.GetValue(dense)!) { Set = r.GetValue(set), KvDType = r.GetValue(kvDType)!, Trace = r.GetValue(trace) }));
        return command;
    }

    private sealed record Args(string? Model, string? Draft, string? Prompts, int? NumPrompts, int SamplesPerPrompt, int MaxNewTokens,
        float Temperature, float TopP, ulong Seed, string Strategy, string Device, string Ep, int Threads, int KvMemoryMiB, int MaxBatch,
        string? CostProfile, string? Out, string? Stats, int Instances, string Reallocate, string Dense)
    {
        /// <summary>--set: a named model set in place of --model.</summary>
        public string? Set { get; init; }

        public string KvDType { get; init; } = "f32";

        /// <summary>--trace: the step trace's CSV file.</summary>
        public string? Trace { get; init; }
    }

    private static int Run(Args a)
    {
        if (a.NumPrompts is { } numPrompts) OptionChecks.Positive(("--num-prompts", numPrompts));
        OptionChecks.Positive(("--samples-per-prompt", a.SamplesPerPrompt), ("--max-new-tokens", a.MaxNewTokens));
        OptionChecks.Temperature(a.Temperature);
        if (!(a.TopP > 0 && a.TopP <= 1)) throw new ArgumentException($"--top-p: {a.TopP}, must be in (0, 1]");
        OptionChecks.Positive(("--kv-memory-mib", a.KvMemoryMiB), ("--max-batch", a.MaxBatch));
        OptionChecks.Threads(a.Threads);
        OptionChecks.Positive(("--instances", a.Instances));
        bool reallocate = Rlhf.SettingText.OnOff(a.Reallocate, "--reallocate");
        var dense = CommonOptions.ParseDense(a.Dense);
        var kvDType = CommonOptions.ParseKvDType(a.KvDType);
        var settings = new GeneratorSettings { Strategy = StrategyMode.Parse(a.Strategy, "--strategy"), MaxBatch = a.MaxBatch, CostProfilePath = a.CostProfile };
        settings.Validate();
        ExecutionProviders.Check(a.Ep);
        // Outputs are checked before any work; the cost profile only when it will be written (missing), else read.
        OutputPaths.Check(("--out", a.Out), ("--stats", a.Stats), ("--trace", a.Trace), ("--cost-profile", a.CostProfile is { } cp && File.Exists(cp) ? null : a.CostProfile));
        if (a.CostProfile is { } profile && Directory.Exists(profile)) throw new ArgumentException($"--cost-profile '{profile}': is a folder, not a file");
        // Instances share the cores: without --threads each gets its share.
        int threads = a.Threads > 0 || a.Instances == 1 ? a.Threads : Math.Max(1, Environment.ProcessorCount / a.Instances);
        var session = new Model.Onnx.OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(a.Ep), IntraOpThreads = threads };

        var (policyFolder, draftFolder) = ModelFolders.Resolve(a.Model, a.Draft, set: a.Set);
        using var models = GenerationModels.Load(policyFolder, draftFolder);
        var tokenizer = models.Checkpoint.Tokenizer;
        bool defaultTask = a.Prompts is null;
        var texts = defaultTask ? TaskPrompts(a.NumPrompts ?? 16, a.Seed) : PromptFile.Read(a.Prompts!);
        if (!defaultTask && a.NumPrompts is { } n) texts = texts.Take(n).ToArray();
        var promptIds = texts.Select((t, i) => tokenizer.EncodeChecked(t, defaultTask ? $"prompt {i}" : $"--prompts '{a.Prompts}': prompt {i}")).ToArray();
        for (int p = 0; p < promptIds.Length; p++)
            if (promptIds[p].Length == 0) throw new ArgumentException($"prompt {p}: encodes to no tokens");

        // Memory, before the caches are reserved: no more instances than samples (an idle instance only holds memory),
        // then every model's KV budget, sessions and the weights against what the machine has.
        int instances = a.Instances;
        int sampleCount = promptIds.Length * a.SamplesPerPrompt;
        if (instances > sampleCount)
        {
            AnsiConsole.MarkupLine($"--instances {a.Instances}: clamped to {sampleCount}, the number of samples (an instance without samples would only reserve memory)");
            instances = sampleCount;
        }
        int modelsPerInstance = draftFolder is null ? 1 : 2;
        MemoryBudget.Require("--instances × --kv-memory-mib", modelsPerInstance * (instances > 1 ? instances + 1 : 1), (long)a.KvMemoryMiB << 20,
            MemoryBudget.WeightBytes(policyFolder) + (draftFolder is null ? 0 : MemoryBudget.WeightBytes(draftFolder)), "lower --kv-memory-mib or --instances");

        using var backend = Devices.Open(a.Device);
        var runtime = new TransformerOptions { KvMemoryBudgetBytes = (long)a.KvMemoryMiB << 20, Session = session, Dense = dense, KvDType = kvDType };
        using var pair = models.Open(backend, runtime);
        // Each cluster instance: its own device queue (one GPU each where there are several), KV caches and sessions over the shared weights.
        using var fleet = models.Instances(a.Device, runtime);
        using var trace = a.Trace is null ? null : new StepTraceFile(a.Trace);
        var generator = new Generator(pair.Policy, pair.Draft, settings with { StopTokens = models.Checkpoint.StopTokenIds(), StepTrace = trace });
        var requests = GenerationRequests.For(promptIds, a.SamplesPerPrompt, a.MaxNewTokens, a.Temperature, a.TopP, a.Seed);

        AnsiConsole.MarkupLine($"policy [bold]{Markup.Escape(policyFolder)}[/] ({models.Policy.ParameterCount:N0} parameters)" +
            (pair.Draft is null ? "" : $", draft [bold]{Markup.Escape(draftFolder!)}[/] ({pair.Draft.Weights.ParameterCount:N0})") +
            $" on {Markup.Escape(backend.Info.Id)}, strategy {Markup.Escape(a.Strategy)}, dense {Markup.Escape(pair.Policy.DenseChoice.ToString())}");
        GeneratorRunResult outcome = null!;
        AnsiConsole.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"generating {requests.Length} samples", maxValue: requests.Length);
                var clock = System.Diagnostics.Stopwatch.StartNew();
                if (instances == 1)
                    outcome = generator.Run(requests, instance =>
                    {
                        task.Value = instance.Finished.Count;
                        double secs = Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                        task.Description = $"generating: {instance.Finished.Count}/{requests.Length} done, {instance.LiveCount} live, {instance.Stats.TokensGenerated / secs:F0} tok/s";
                    });
                else
                    outcome = generator.RunCluster(requests, instances, fleet.Get, new Generation.Cluster.ClusterOptions { Reallocate = reallocate });
                task.Value = requests.Length;
            });

        // Both outputs or neither: a failing --stats must not leave --out renamed into place.
        OutputPaths.WriteAll(("--out", a.Out, a.Out is null ? "" : Jsonl(outcome, texts, tokenizer, defaultTask)),
            ("--stats", a.Stats, StatsJson(outcome).ToJsonString(new JsonSerializerOptions { WriteIndented = true })));
        trace?.Complete();
        Summary(outcome, texts, tokenizer, defaultTask);
        return 0;
    }

    /// <summary>Prompts of the default task, seeded.</summary>
    internal static string[] TaskPrompts(int count, ulong seed)
    {
        var task = new ArithmeticTask(unchecked((int)seed ^ (int)(seed >> 32)));
        return Enumerable.Range(0, count).Select(_ => task.Next().Prompt).ToArray();
    }

    private static string Jsonl(GeneratorRunResult outcome, IReadOnlyList<string> prompts, TextTokenizer tokenizer, bool defaultTask)
    {
        var sb = new StringBuilder();
        foreach (var r in outcome.Results)
        {
            var text = tokenizer.Decode(r.Tokens, skipSpecialTokens: true);
            var line = new JsonObject
            {
                ["prompt_index"] = r.Request.PromptIndex,
                ["sample_index"] = r.Request.SampleIndex,
                ["prompt"] = prompts[r.Request.PromptIndex],
                ["prompt_tokens"] = r.Request.Prompt.Length,
                ["tokens"] = new JsonArray(r.Tokens.Select(t => (JsonNode)t).ToArray()),
                ["text"] = text,
                ["finish_reason"] = r.FinishReason.ToString().ToLowerInvariant(),
            };
            if (defaultTask) line["reward"] = ArithmeticTask.Reward(prompts[r.Request.PromptIndex], text);
            sb.Append(line.ToJsonString()).Append('\n');
        }
        return sb.ToString();
    }

    internal static JsonObject StatsJson(GeneratorRunResult o)
    {
        var s = o.Stats;
        var byBatch = new JsonObject();
        foreach (var (batch, (steps, emitted, ss)) in s.ByBatchSize)
        {
            var entry = new JsonObject { ["steps"] = steps, ["sample_steps"] = ss, ["mean_emitted_per_sample_step"] = ss == 0 ? 0 : (double)emitted / ss };
            if (o.ChoicesByBatchSize.TryGetValue(batch, out var choices))
                entry["strategies"] = new JsonObject(choices.Select(kv => KeyValuePair.Create(kv.Key.ToString(), (JsonNode?)kv.Value)));
            byBatch[batch.ToString(CultureInfo.InvariantCulture)] = entry;
        }
        return new JsonObject
        {
            ["samples"] = o.Results.Count,
            ["total_tokens"] = s.TokensGenerated,
            ["wall_seconds"] = o.WallSeconds,
            ["tokens_per_second"] = s.TokensGenerated / Math.Max(o.WallSeconds, 1e-9),
            ["prefill_tokens_per_second"] = s.PrefillTokensPerSecond,
            ["decode_tokens_per_second"] = s.DecodeTokensPerSecond,
            ["decode_tokens"] = s.DecodeTokens,
            ["steps"] = s.Steps,
            ["mean_accepted_per_step"] = s.MeanAcceptedPerSampleStep,
            ["mean_emitted_per_sample_step"] = s.MeanEmittedPerSampleStep,
            ["draft_tokens_proposed"] = s.DraftTokensProposed,
            ["draft_tokens_accepted"] = s.DraftTokensAccepted,
            ["acceptance_rate"] = s.AcceptanceRate,
            ["preemptions"] = s.Preemptions,
            ["prefill_tokens"] = s.PrefillTokens,
            ["shared_prefill_tokens"] = s.SharedPrefillTokens,
            ["seconds"] = new JsonObject
            {
                ["prefill"] = s.PrefillSeconds, ["decode"] = s.DecodeSeconds, ["draft"] = s.DraftSeconds, ["verify_forward"] = s.VerifyForwardSeconds, ["verify_kernel"] = s.VerifyKernelSeconds,
            },
            ["strategy_histogram"] = new JsonObject(s.StrategyHistogram.OrderByDescending(kv => kv.Value).Select(kv => KeyValuePair.Create(kv.Key.ToString(), (JsonNode?)kv.Value))),
            ["strategy_seconds"] = new JsonObject(s.SecondsByStrategy.OrderByDescending(kv => kv.Value).Select(kv => KeyValuePair.Create(kv.Key.ToString(), (JsonNode?)kv.Value))),
            ["by_batch_size"] = byBatch,
            ["finish_reasons"] = new JsonObject(o.Results.GroupBy(r => r.FinishReason.ToString().ToLowerInvariant())
                .Select(g => KeyValuePair.Create(g.Key, (JsonNode?)g.Count()))),
            ["instances"] = o.Cluster?.Instances.Count ?? 1,
            ["migrations"] = o.Cluster?.Migrations ?? 0,
            ["overlapped_migrations"] = o.Cluster?.OverlappedMigrations ?? 0,
            ["kv_bytes_moved"] = o.Cluster?.KvBytesMoved ?? 0,
            ["recomputes"] = o.Cluster?.Recomputes ?? 0,
            ["per_instance"] = o.Cluster is null ? null : new JsonArray(o.Cluster.Instances.Select(i => (JsonNode)new JsonObject
            {
                ["instance"] = i.Instance, ["busy_seconds"] = i.BusySeconds, ["idle_seconds"] = i.IdleSeconds,
                ["last_finish_seconds"] = i.LastFinishSeconds, ["steps"] = i.Steps, ["samples_finished"] = i.SamplesFinished, ["failure"] = i.Failure,
            }).ToArray()),
        };
    }

    private static void Summary(GeneratorRunResult o, IReadOnlyList<string> prompts, TextTokenizer tokenizer, bool defaultTask)
    {
        var s = o.Stats;
        var table = new Table().Border(TableBorder.Rounded).AddColumns("samples", "tokens", "wall s", "tokens/s", "prefill tokens/s", "decode tokens/s", "steps", "tokens per sample-step", "draft acceptance", "preemptions");
        table.AddRow(o.Results.Count.ToString(CultureInfo.InvariantCulture), s.TokensGenerated.ToString(CultureInfo.InvariantCulture), o.WallSeconds.ToString("F2", CultureInfo.InvariantCulture),
            (s.TokensGenerated / Math.Max(o.WallSeconds, 1e-9)).ToString("F1", CultureInfo.InvariantCulture),
            s.PrefillTokensPerSecond.ToString("F1", CultureInfo.InvariantCulture), s.DecodeTokensPerSecond.ToString("F1", CultureInfo.InvariantCulture), s.Steps.ToString(CultureInfo.InvariantCulture),
            s.MeanEmittedPerSampleStep.ToString("F2", CultureInfo.InvariantCulture),
            s.DraftTokensProposed == 0 ? "-" : s.AcceptanceRate.ToString("P0", CultureInfo.InvariantCulture),
            s.Preemptions.ToString(CultureInfo.InvariantCulture));
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine("strategies: " + Markup.Escape(string.Join(", ", s.StrategyHistogram.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} ×{kv.Value}"))));
        if (defaultTask)
        {
            double reward = o.Results.Average(r => ArithmeticTask.Reward(prompts[r.Request.PromptIndex], tokenizer.Decode(r.Tokens, skipSpecialTokens: true)));
            AnsiConsole.MarkupLine($"default task: mean reward {reward:F3}");
        }
    }
}
