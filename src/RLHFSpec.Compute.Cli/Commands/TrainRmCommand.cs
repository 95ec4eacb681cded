using System.CommandLine;
using System.Globalization;
using RLHFSpec.Compute.Rlhf;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec train-rm</c>: trains a reward model (the policy's trunk with a scalar head) on preference pairs with a
/// Bradley–Terry loss; pairs from a JSONL/Parquet file or, without <c>--pairs</c>, from the default task (chosen =
/// the worked answer, rejected = one with a mistake). One line per epoch (train loss, held-out pairwise accuracy);
/// the model is written in HF layout with <see cref="RewardModelTrainer.SummaryFile"/>, ready for
/// <c>rlhfspec train --reward model:DIR</c>.
/// </summary>
internal static class TrainRmCommand
{
    public static Command Create()
    {
        var defaults = new RewardTrainingOptions();
        var pairs = new Option<string?>("--pairs") { Description = "Preference pairs: JSONL with prompt, chosen, rejected (or Parquet with those columns); default: pairs from the default task" };
        var taskPairs = new Option<int>("--task-pairs") { Description = "Without --pairs: how many default-task pairs to generate", DefaultValueFactory = _ => 1024 };
        var taskMaxTerms = new Option<int>("--task-max-terms") { Description = "Without --pairs: skip task prompts with more terms (keeps sequences short)", DefaultValueFactory = _ => 8 };
        var model = new Option<string?>("--model") { Description = "Base model folder (HF layout: a policy, whose trunk is used, or a reward model); default: the embedded policy" };
        var output = new Option<string?>("--out") { Description = "Output folder for the reward model; default: runs/rm-<time>" };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training pairs", DefaultValueFactory = _ => defaults.Epochs };
        var batch = new Option<int>("--batch-size") { Description = "Pairs per gradient step", DefaultValueFactory = _ => defaults.BatchSize };
        var lr = new Option<double>("--learning-rate") { Description = "AdamW learning rate (constant)", DefaultValueFactory = _ => defaults.LearningRate };
        var l2 = new Option<double>("--reward-l2") { Description = "Coefficient of the mean squared reward added to the loss", DefaultValueFactory = _ => defaults.RewardL2 };
        var seed = new Option<int>("--seed") { Description = "Seed of the split, the shuffling and the default-task pairs", DefaultValueFactory = _ => defaults.Seed };
        var evalFraction = new Option<double>("--eval-fraction") { Description = "Share of the pairs held out for pairwise accuracy", DefaultValueFactory = _ => defaults.EvalFraction };
        var threads = CommonOptions.Threads();
        var ep = CommonOptions.Ep();
        var command = new Command("train-rm", "Train a reward model on preference pairs (Bradley–Terry)")
        {
            pairs, taskPairs, taskMaxTerms, model, output, epochs, batch, lr, l2, seed, evalFraction, threads, ep,
        };
        command.SetAction(r => Run(r.GetValue(pairs), r.GetValue(taskPairs), r.GetValue(taskMaxTerms), r.GetValue(model), r.GetValue(output), new RewardTrainingOptions
        {
            Epochs = r.GetValue(epochs),
            BatchSize = r.GetValue(batch),
            LearningRate = r.GetValue(lr),
            RewardL2 = r.GetValue(l2),
            Seed = r.GetValue(seed),
            EvalFraction = r.GetValue(evalFraction),
            Threads = r.GetValue(threads),
            Ep = r.GetValue(ep)!,
        }));
        return command;
    }

    private static int Run(string? pairsFile, int taskPairs, int taskMaxTerms, string? model, string? output, RewardTrainingOptions options)
    {
        // Everything the user gave is checked before anything is written (or the default models pretrained).
        options.Validate();
        ExecutionProviders.Check(options.Ep);
        if (pairsFile is null && taskPairs < 1) throw new ArgumentException($"--task-pairs: {taskPairs}, must be >= 1");
        if (pairsFile is null && taskMaxTerms < Model.Tasks.ArithmeticTask.MinTerms)
            throw new ArgumentException($"--task-max-terms: {taskMaxTerms}, must be >= {Model.Tasks.ArithmeticTask.MinTerms}");
        var pairs = pairsFile is not null ? PreferenceFile.Read(pairsFile) : TaskPreferencePairs.Generate(taskPairs, options.Seed, taskMaxTerms);
        string source = pairsFile is not null ? $"pairs file '{pairsFile}'" : $"default task ({taskPairs} pairs of at most {taskMaxTerms} terms, seed {options.Seed})";
        RewardModelTrainer.CheckSomePreference(pairs, source);
        var (policy, _) = ModelFolders.Resolve(model, null, draftOptional: true);
        string outFolder = output ?? Path.Combine("runs", "rm-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));

        AnsiConsole.MarkupLine($"train-rm: {pairs.Count} pairs from {Markup.Escape(source)}, base {Markup.Escape(policy)}, " +
            string.Create(CultureInfo.InvariantCulture, $"{options.Epochs} epoch(s), batch {options.BatchSize} pairs, learning rate {options.LearningRate:G3}"));
        var summary = RewardModelTrainer.Train(pairs, source, policy, outFolder, options, e => Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"epoch {e.Epoch}: train loss {e.TrainLoss:F4}, held-out accuracy {Percent(e.EvalAccuracy)}, held-out loss {Loss(e.EvalLoss)} ({e.Seconds:F1} s)")));
        string dropped = summary.DroppedIdentical > 0 ? $", {summary.DroppedIdentical} identical pair(s) left out" : "";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"train-rm: {summary.TrainPairs} training pairs, {summary.EvalPairs} held out (accuracy before training {Percent(summary.InitialEvalAccuracy)}){dropped}; {summary.Steps} steps in {summary.Seconds:F1} s"));
        Console.WriteLine($"reward model: {Path.GetFullPath(outFolder)} (use it with: rlhfspec train --reward model:{outFolder})");
        return 0;
    }

    private static string Loss(double? x) => x is { } v ? v.ToString("F4", CultureInfo.InvariantCulture) : "-";

    private static string Percent(double? x) => x is { } v ? (v * 100).ToString("F1", CultureInfo.InvariantCulture) + " %" : "-";
}
