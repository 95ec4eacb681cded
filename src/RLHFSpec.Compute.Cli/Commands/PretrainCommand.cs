using System.CommandLine;
using RLHFSpec.Compute.Model.Pretraining;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec pretrain</c>: trains the default policy and its two drafts on the arithmetic task (CPU, minutes) and
/// saves them as Hugging Face folders, with a progress bar per model and a summary table.
/// </summary>
internal static class PretrainCommand
{
    public static Command Create()
    {
        var output = new Option<string?>("--out") { Description = $"Output folder (default: ${DefaultModels.EnvironmentVariable}, else <repo>/models)" };
        var seed = new Option<int>("--seed") { Description = "Seed of data, initial weights and evaluation set", DefaultValueFactory = _ => new PretrainOptions().Seed };
        var steps = new Option<int?>("--steps") { Description = "Optimizer steps per model (default: each model's own budget)" };
        var policyOnly = new Option<bool>("--policy-only") { Description = "Train only the policy" };
        var only = new Option<string[]>("--model") { Description = "Train only these models (policy, draft-small, draft-tiny; the medium set also draft-skip); repeatable", AllowMultipleArgumentsPerToken = true };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime threads (0 = all cores)" };
        var set = new Option<string>(CommonOptions.SetOption, CommonOptions.ModelSetOption)
        {
            Description = $"Which model set: default (into the output folder) or {Pretrainer.MediumSetName} (the bandwidth-bound set, grown from the default policy, into <models>/{Pretrainer.MediumSetName} unless --out)",
            DefaultValueFactory = _ => "default",
        };
        var chooseOnly = new Option<bool>("--choose-draft-only")
        {
            Description = $"Train nothing: measure the {Pretrainer.MediumSetName} set's drafts on this machine and write its choice ({SetDraftChoice.FileName}), as pretraining the set does at its end",
        };
        var eval = new Option<int>("--eval-prompts") { Description = "Evaluation prompts per model (0 = skip evaluation)", DefaultValueFactory = _ => new PretrainOptions().EvalPrompts };
        var command = new Command("pretrain", "Train the default policy and draft models on the arithmetic task and save them")
        {
            output, seed, steps, policyOnly, only, threads, eval, set, chooseOnly,
        };
        command.SetAction(r => Run(r.GetValue(output), r.GetValue(set)!, r.GetValue(chooseOnly), new PretrainOptions
        {
            Seed = r.GetValue(seed),
            Steps = r.GetValue(steps),
            PolicyOnly = r.GetValue(policyOnly),
            Only = r.GetValue(only) is { Length: > 0 } names ? names : null,
            Threads = r.GetValue(threads),
            EvalPrompts = r.GetValue(eval),
        }));
        return command;
    }

    private static int Run(string? output, string set, bool chooseOnly, PretrainOptions options)
    {
        options.Validate();
        // One line per row also when piped to a log (Spectre would wrap at 80 columns).
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 240;
        string defaults = DefaultModels.Folder;
        string folder = string.IsNullOrWhiteSpace(output) ? DefaultModels.SetFolder(defaults, set) : Path.GetFullPath(output);
        if (chooseOnly)
        {
            if (set != Pretrainer.MediumSetName) throw new ArgumentException($"--choose-draft-only: only the {Pretrainer.MediumSetName} set chooses its draft (--set {Pretrainer.MediumSetName})");
            if (!DefaultModels.Exists(folder)) throw new ArgumentException($"--choose-draft-only: no complete set in {folder}; make it with ./rlhfspec pretrain --set {set}");
            Pretrainer.CheckWritable(folder);
            DraftChoiceRun.Measure(folder, options.Threads);
            return 0;
        }
        if (set == Pretrainer.MediumSetName)
        {
            // The medium policy grows from the default policy: make the default set first when it is missing.
            if (!DefaultModels.Exists(defaults))
            {
                AnsiConsole.MarkupLine($"the medium set grows from the default policy, which is missing: pretraining the default set into [bold]{Markup.Escape(defaults)}[/] first");
                TrainWithProgress(defaults, new PretrainOptions { Seed = options.Seed, Threads = options.Threads });
            }
            options = options with { Models = Pretrainer.MediumModelSpecs(ArithmeticTokenizer.Create(), defaults) };
        }
        else _ = DefaultModels.SetFolder(defaults, set);
        Pretrainer.CheckWritable(folder);
        AnsiConsole.MarkupLine($"pretrain: writing to [bold]{Markup.Escape(folder)}[/] (seed {options.Seed})");
        var summary = TrainWithProgress(folder, options);
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("model", "params", "start", "steps", "loss first→last", "token acc", "exact acc", "train s (cpu s)", "eval s");
        foreach (var m in summary.Models)
            table.AddRow(Markup.Escape(m.Name), m.Parameters.ToString("N0"), m.Source is null ? "scratch" : $"grown ({m.GrowSeconds:0.0} s)", m.Steps.ToString(),
                $"{m.InitialLoss:0.000} → {m.FinalLoss:0.000}",
                m.EvalPrompts > 0 ? $"{m.TokenAccuracy:P1}" : "-",
                m.EvalPrompts > 0 ? $"{m.ExactAccuracy:P1} of {m.EvalPrompts}" : "-",
                $"{m.TrainSeconds:0.0} ({m.TrainCpuSeconds:0})", $"{m.EvalSeconds:0.0}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"pretrain: done in {summary.TotalSeconds:0.0} s; summary in {Markup.Escape(Path.Combine(folder, PretrainSummary.FileName))}");
        // The medium set's draft is chosen by measurement once its drafts are (re)made: which one drafts fastest
        // changes from one making of the set to the next.
        if (set == Pretrainer.MediumSetName) DraftChoiceRun.Measure(folder, options.Threads);
        return 0;
    }

    /// <summary>Pretrains into <paramref name="folder"/> with a progress bar per model (also used when the default models are missing).</summary>
    internal static PretrainSummary TrainWithProgress(string folder, PretrainOptions options)
    {
        PretrainSummary summary = null!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                var reporter = new SyncProgress(p =>
                {
                    if (!tasks.TryGetValue(p.Model, out var task))
                        tasks[p.Model] = task = ctx.AddTask(Markup.Escape(p.Model), maxValue: p.TotalSteps + 1);
                    string loss = double.IsNaN(p.Loss) ? "" : $" loss {p.Loss:0.000}";
                    task.Description = Markup.Escape($"{p.Model,-12} {p.Phase,-5}{loss}");
                    task.Value = p.Phase == "saved" ? p.TotalSteps + 1 : p.Step;
                });
                summary = Pretrainer.Run(folder, options, reporter);
            });
        return summary;
    }

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; would post to the thread pool, out of order).</summary>
    private sealed class SyncProgress(Action<PretrainProgress> report) : IProgress<PretrainProgress>
    {
        public void Report(PretrainProgress value) => report(value);
    }
}
