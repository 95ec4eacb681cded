using System.Globalization;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// Chooses a set's draft by measurement (<see cref="SetDraftChoice"/>), on the CPU where the set was made: the policy's
/// task rollouts (as <c>bench agreement</c> draws them), each draft's agreement with the policy on them, the policy's
/// batch-1 forward of 1 … <see cref="MaxVerifyTokens"/> tokens and each draft's batch-1 decode step (as <c>bench model</c>
/// times them); the best predicted batch-1 chain speedup wins, and the choice is written to the set's <c>draft.json</c>.
/// </summary>
internal static class DraftChoiceRun
{
    /// <summary>Longest verify (the pending token and 8 drafted ones) the prediction considers.</summary>
    public const int MaxVerifyTokens = 9;

    /// <summary>The rollouts the agreement is measured on: <c>bench agreement</c>'s defaults (prompts × samples, at most this many tokens, T = 1).</summary>
    private const int RolloutPrompts = 32, RolloutSamples = 4, RolloutTokens = 256;

    public static SetDraftChoice Measure(string setFolder, int threads)
    {
        var drafts = DefaultModels.DraftsIn(setFolder);
        if (drafts.Length == 0) throw new ArgumentException($"{setFolder}: no draft models to choose from");
        var session = new OnnxSessionOptions { IntraOpThreads = threads };
        var runtime = new TransformerOptions { KvMemoryBudgetBytes = 512L << 20, Session = session };
        using var checkpoint = Checkpoint.Load(DefaultModels.PolicyFolder(setFolder));
        using var policyWeights = TransformerWeights.FromCheckpoint(checkpoint);
        using var backend = Devices.Open("cpu");
        using var policy = new TransformerModel(policyWeights, backend, runtime);
        AnsiConsole.MarkupLine($"choosing the set's draft: agreement on the policy's rollouts, batch-1 step times ({Markup.Escape(backend.Info.Id)})");
        var (sequences, summary) = AgreementBench.Rollouts(policy, checkpoint, RolloutPrompts, RolloutSamples, RolloutTokens, 1f, 0);
        AnsiConsole.MarkupLine(Markup.Escape(summary));
        var verify = new double[MaxVerifyTokens];
        var policyBench = new ModelBenchmark(policyWeights, backend, session) { MinSeconds = 0.2 };
        for (int k = 1; k <= MaxVerifyTokens; k++) verify[k - 1] = policyBench.Step(1, k, 128).Seconds;
        var candidates = new List<SetDraftChoice.Candidate>();
        foreach (var name in drafts)
        {
            using var draftCheckpoint = Checkpoint.Load(DefaultModels.DraftFolder(setFolder, name));
            Checkpoint.CheckCompatibleDraft(checkpoint, draftCheckpoint);
            using var draftWeights = TransformerWeights.FromCheckpoint(draftCheckpoint);
            using var draft = new TransformerModel(draftWeights, backend, runtime);
            double agreement = DraftAgreement.Measure(policy, draft, sequences, 1f, maxTokensPerForward: 2048).MeanOverlap;
            double step = new ModelBenchmark(draftWeights, backend, session) { MinSeconds = 0.2 }.Step(1, 1, 128).Seconds;
            var (depth, speedup) = SetDraftChoice.PredictedSpeedup(agreement, step, verify);
            candidates.Add(new SetDraftChoice.Candidate(name, agreement, step, depth, speedup));
        }
        var choice = SetDraftChoice.Choose(candidates, verify, backend.Info.Id);
        choice.Save(setFolder);
        Print(choice);
        return choice;
    }

    private static void Print(SetDraftChoice choice)
    {
        var c = CultureInfo.InvariantCulture;
        var table = new Table().Border(TableBorder.Rounded).AddColumns("draft", "Σ min(p, q)", "decode step (batch 1)", "chain", "predicted batch-1 speedup");
        foreach (var d in choice.Candidates)
            table.AddRow(Markup.Escape(d.Name + (d.Name == choice.Draft ? " (chosen)" : "")), d.Agreement.ToString("F3", c), $"{(d.StepSeconds * 1e6).ToString("F0", c)} µs",
                d.Depth == 0 ? "-" : $"chain:{d.Depth}", d.PredictedSpeedup.ToString("F2", c) + "×");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine(Markup.Escape(string.Create(c,
            $"policy forward at batch 1: {choice.VerifySeconds[0] * 1e3:F2} ms for 1 token, {choice.VerifySeconds[^1] * 1e3:F2} ms for {choice.VerifySeconds.Count}; the set drafts with {choice.Draft} ({SetDraftChoice.FileName})")));
    }
}
