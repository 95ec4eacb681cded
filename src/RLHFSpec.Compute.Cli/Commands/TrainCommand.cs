using System.CommandLine;
using System.Globalization;
using RLHFSpec.Compute.Rlhf;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec train</c>: the RLHF loop (generation → inference → training → draft refresh) on the default task
/// and models unless told otherwise; a JSON config and/or flags for every setting; a run folder with metrics JSONL,
/// plot and checkpoints; <c>--resume DIR</c> continues a run from its latest checkpoint.
/// </summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "JSON config (snake_case keys); flags override it" };
        var output = new Option<string?>("--out") { Description = "Run folder (metrics.jsonl, metrics.png, checkpoints); default: runs/<time>" };
        var resume = new Option<string?>("--resume") { Description = "Continue the run in this folder from its latest checkpoint" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the run already in the --out folder (without it such a folder is refused)" };
        var set = new Option<string[]>("--set") { Description = "KEY=VALUE overrides of any config key (repeatable)", AllowMultipleArgumentsPerToken = true };
        var command = new Command("train", "Run RLHF (GRPO) with speculative generation: the main job") { config, output, resume, overwrite, set };
        // Every config key is also a flag of its own (kebab-case), e.g. --iterations 20 --speculation off.
        var flags = new List<Option<string?>>();
        foreach (var key in RlhfConfig.Keys)
        {
            var flag = new Option<string?>("--" + key.Replace('_', '-')) { Description = $"config key '{key}'" };
            flags.Add(flag);
            command.Options.Add(flag);
        }
        command.SetAction(r =>
        {
            var overrides = new List<(string, string)>();
            foreach (var f in flags)
                if (r.GetValue(f) is { } v) overrides.Add((f.Name, v));
            foreach (var kv in r.GetValue(set) ?? [])
            {
                int eq = kv.IndexOf('=');
                if (eq <= 0) throw new ArgumentException($"--set '{kv}': expected KEY=VALUE");
                overrides.Add((kv[..eq], kv[(eq + 1)..]));
            }
            return Run(r.GetValue(config), r.GetValue(output), r.GetValue(resume), r.GetValue(overwrite), overrides);
        });
        return command;
    }

    private static int Run(string? configPath, string? outFolder, string? resume, bool overwrite, List<(string Key, string Value)> overrides)
    {
        if (resume is not null && outFolder is not null && Path.GetFullPath(resume) != Path.GetFullPath(outFolder))
            throw new ArgumentException("--resume and --out name different folders; a resumed run continues in its own folder");
        if (resume is not null && overwrite) throw new ArgumentException("--overwrite starts a new run; it does not go with --resume");
        if (resume is not null && !Directory.Exists(resume))
            throw new DirectoryNotFoundException(File.Exists(resume) ? $"--resume '{resume}': is a file, not a run folder" : $"--resume '{resume}': no such folder");
        // A resumed run's folder is taken (locked) before its config is read, so a live run's folder is refused as in
        // use, whatever state its files are in.
        var folder = resume is not null ? RunFolder.Open(resume, RunFolderMode.Resume, "--resume") : null;
        RlhfConfig config;
        string policy;
        string? draft;
        try
        {
            config = resume is not null ? RlhfConfig.Load(Path.Combine(resume, RlhfTrainer.ConfigFile))
                : configPath is not null ? RlhfConfig.Load(configPath) : new RlhfConfig();
            foreach (var (key, value) in overrides) config = config.With(key, value);
            config.Validate();
            ExecutionProviders.Check(config.Ep);
            OutputPaths.Check(("--cost-profile", config.CostProfile is { } cp && File.Exists(cp) ? null : config.CostProfile));
            // A new run's folder is taken once its config is valid, before any work, so a second run on it is refused at
            // once; a start that fails removes what it created.
            folder ??= outFolder is not null ? RunFolder.Open(outFolder, overwrite ? RunFolderMode.Overwrite : RunFolderMode.New, "--out")
                : RunFolder.CreateUnique("runs");
            // A resumed run continues from its own checkpoint and reference: the model folders are not needed (nor pretrained).
            (policy, draft) = resume is not null
                ? (Path.Combine(resume, RlhfTrainer.ReferenceFolder), null)
                : ModelFolders.Resolve(config.Policy, config.Draft,
                    set: config.ModelSet, setOption: "--model-set", modelOption: "--policy");
        }
        catch
        {
            folder?.Abandon();
            throw;
        }
        string run = folder.FullPath;

        try
        {
            // Memory, before anything is reserved: each model's KV budget (the generator's, and each instance's), and the
            // weights with what training adds (reference, gradients, two AdamW moments: about 5 copies of the policy).
            int models = (config.Speculation.IsOff || draft is null ? 1 : 2) * (config.Instances > 1 ? config.Instances + 1 : 1);
            MemoryBudget.Require("instances × kv_memory_mib", models, (long)config.KvMemoryMiB << 20,
                5 * MemoryBudget.WeightBytes(policy) + (draft is null ? 0 : 3 * MemoryBudget.WeightBytes(draft)),
                "lower kv_memory_mib or instances");
        }
        catch
        {
            folder.Abandon();
            throw;
        }

        using var trainer = new RlhfTrainer(config, folder, policy, draft);
        AnsiConsole.MarkupLine($"RLHF ({SettingText.Name(config.Algorithm).ToUpperInvariant()}) run [bold]{Markup.Escape(Path.GetFullPath(run))}[/]: iterations {trainer.NextIteration}..{config.Iterations}, " +
            $"{config.PromptsPerIteration} prompts × {config.SamplesPerPrompt} samples, speculation {Markup.Escape(config.Speculation.ToString())}, " +
            (config.Instances > 1 ? $"{config.Instances} generation instances, reallocation {SettingText.OnOff(config.Reallocate)}, " : "") +
            (resume is not null ? $"resumed from {Markup.Escape(RlhfTrainer.LatestCheckpoint(run) ?? "?")}" : $"policy {Markup.Escape(policy)}"));
        AnsiConsole.MarkupLine(trainer.Evaluation is { } evaluation
            ? $"held-out evaluation: {Markup.Escape(evaluation.Source)} ({evaluation.DistinctPrompts} distinct), {(config.EvalTemperature == 0 ? "greedy" : $"temperature {config.EvalTemperature.ToString(CultureInfo.InvariantCulture)}")}, " +
              (config.EvalBeforeTrain ? "before training and " : "") + (config.EvalEvery > 0 ? $"every {config.EvalEvery} iterations and after the last" : "never after an iteration")
            : config.EvalEvery == 0 && !config.EvalBeforeTrain
                ? "held-out evaluation: off (eval_every 0, eval_before_train false)"
                : "held-out evaluation: none (training prompts from a file: name a set with --eval-prompts FILE)");
        AnsiConsole.MarkupLine(Markup.Escape(RlhfTrainer.Reproducibility(config)));
        var observer = new ConsoleObserver();
        trainer.Run(observer);
        if (trainer.Summary is { } summary) AnsiConsole.Write(SummaryTable(summary));
        AnsiConsole.MarkupLine($"metrics: {Markup.Escape(Path.Combine(run, RlhfTrainer.MetricsFile))}, plot: {Markup.Escape(Path.Combine(run, RlhfTrainer.PlotFile))}, " +
            $"summary: {Markup.Escape(Path.Combine(run, RlhfTrainer.SummaryFile))}");
        return 0;
    }

    /// <summary>The end-of-run table: what summary.json holds.</summary>
    private static Table SummaryTable(RunSummary s)
    {
        static string Pct(double x) => x.ToString("P1", CultureInfo.InvariantCulture);
        static string Num(double x) => x.ToString("F3", CultureInfo.InvariantCulture);
        static string Span(FirstLast? v, Func<double, string> f) => v is null ? "—" : $"{f(v.First)} → {f(v.Last)}  (iteration {v.FirstIteration} → {v.LastIteration})";
        var table = new Table { Title = new TableTitle($"run summary: {s.Iterations} of {s.IterationsPlanned} iterations ({s.Algorithm.ToUpperInvariant()})") };
        table.AddColumn("");
        table.AddColumn("");
        table.HideHeaders();
        void Row(string name, string value) => table.AddRow(Markup.Escape(name), Markup.Escape(value));
        Row($"held-out accuracy ({s.EvalPrompts} prompts)", Span(s.EvalAccuracy, Pct));
        if (s.EvalPaired is { } p)
            Row("held-out change, answer by answer", string.Create(CultureInfo.InvariantCulture,
                $"{p.Difference * 100:+0.0;-0.0;0.0} points ({p.WrongToRight} wrong → right, {p.RightToWrong} right → wrong), standard error {p.StandardError * 100:F1} over {p.DistinctPrompts} distinct prompts, z {p.Z:F1}"));
        Row("held-out mean reward", Span(s.EvalRewardMean, Num));
        Row("rollout mean reward", Span(s.RewardMean, Num));
        Row("rollout accuracy", Span(s.Accuracy, Pct));
        if (s.KlLast is { } kl) Row("KL to reference (last)", Num(kl));
        double total = Math.Max(s.Seconds, 1e-9);
        Row("seconds per stage", string.Join(", ", s.SecondsPerStage.Select(kv =>
            string.Create(CultureInfo.InvariantCulture, $"{kv.Key} {kv.Value:F1} s ({kv.Value / total:P0})"))) + string.Create(CultureInfo.InvariantCulture, $"; total {s.Seconds:F1} s"));
        Row("generation", string.Create(CultureInfo.InvariantCulture, $"{s.GenerationTokensPerSecond:F0} tokens/s, {s.MeanAcceptedPerStep:F2} accepted tokens per step"));
        Row("migrations", s.Migrations.ToString(CultureInfo.InvariantCulture));
        Row("checkpoint to use", s.Checkpoint is null ? "none saved" : $"{s.Checkpoint} ({s.CheckpointReason})");
        return table;
    }

    /// <summary>A progress line per stage and one summary line per iteration.</summary>
    private sealed class ConsoleObserver : IRlhfObserver
    {
        private string _stage = "";
        private int _total, _iteration, _last = -1;

        public void StageStarted(int iteration, string stage, int total)
        {
            (_iteration, _stage, _total, _last) = (iteration, stage, total, -1);
        }

        public void StageAdvanced(int value)
        {
            int percent = _total == 0 ? 100 : value * 100 / _total;
            if (percent / 10 == _last / 10) return;
            _last = percent;
            if (!Console.IsOutputRedirected) Console.Write($"\r  iteration {_iteration} {_stage}: {value}/{_total} ({percent} %)          ");
        }

        public void EvaluationFinished(EvaluationMetrics e)
        {
            if (!Console.IsOutputRedirected) Console.Write("\r" + new string(' ', 70) + "\r");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"iter {e.Iteration}: held-out accuracy {e.Accuracy:P1}, mean reward {e.RewardMean:F3}, len {e.ResponseLengthMean:F0}; evaluation {e.Seconds.GetValueOrDefault("evaluation"):F1}s"));
        }

        public void IterationFinished(IterationMetrics m)
        {
            if (!Console.IsOutputRedirected) Console.Write("\r" + new string(' ', 70) + "\r");
            string secs = string.Join(", ", m.Seconds.Select(kv => $"{kv.Key} {kv.Value:F1}s"));
            string draft = m.DraftAcceptanceBefore is { } b
                ? m.DraftRefreshed == false ? $", draft acceptance {b:P0} (measured, not distilled: draft_refresh_tolerance)" : $", draft acceptance {b:P0}→{m.DraftAcceptanceAfter:P0}"
                : "";
            string held = m.Evaluation is { } e ? string.Create(CultureInfo.InvariantCulture, $", held-out acc {e.Accuracy:P1} (reward {e.RewardMean:F3})") : "";
            string critic = m.ValueLoss is { } vl ? string.Create(CultureInfo.InvariantCulture, $", value loss {vl:F4}, explained variance {m.ExplainedVariance:F2}") : "";
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"iter {m.Iteration}: reward {m.RewardMean:F3} (acc {m.Accuracy:P0}){held}, KL {m.Kl:F4}, entropy {m.Entropy:F3}, len {m.ResponseLengthMean:F0} (p99 {m.ResponseLengthP99:F0}), gen {m.GenerationTokensPerSecond:F0} tok/s, accepted/step {m.MeanAcceptedPerStep:F2}{draft}{critic}; {secs}"));
        }
    }
}
