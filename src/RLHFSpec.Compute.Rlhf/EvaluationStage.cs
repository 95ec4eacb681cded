using System.Diagnostics;
using RLHFSpec.Compute.Generation;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Scores the held-out set with the current policy (one response per prompt) and writes its answers into the run
/// folder (<see cref="EvaluationAnswers"/>); nothing of the training state or the rollouts' random streams is touched.
/// </summary>
internal sealed class EvaluationStage(RlhfConfig config, HeldOutEvaluation evaluation, Generator generator, RewardScorer scorer, string runFolder)
{
    /// <summary>The evaluation after <paramref name="iteration"/> (0: before training) and its responses in prompt order.</summary>
    public (EvaluationMetrics Metrics, IReadOnlyList<SampleResult> Results) Run(int iteration, IRlhfObserver? observer)
    {
        observer?.StageStarted(iteration, "evaluation", evaluation.Prompts.Count);
        var clock = Stopwatch.StartNew();
        var (results, _, _) = evaluation.Generate(generator, config);
        var (texts, rewards, correct) = scorer.ScoreEach(evaluation.Prompts, results, evaluation.AreTaskPrompts);
        EvaluationAnswers.Write(runFolder, iteration, results.Select((r, i) =>
            new EvaluationAnswer(evaluation.Prompts[r.Request.PromptIndex], texts[i], rewards[i], correct[i], r.FinishReason.ToString().ToLowerInvariant())).ToList());
        observer?.StageAdvanced(results.Count);
        var metrics = new EvaluationMetrics
        {
            Iteration = iteration,
            RewardMean = rewards.Average(),
            Accuracy = correct.Count(c => c) / (double)correct.Length,
            ResponseLengthMean = results.Average(r => (double)r.Tokens.Length),
            Truncated = results.Count(r => r.FinishReason != FinishReason.Stop) / (double)results.Count,
            Seconds = new() { ["evaluation"] = clock.Elapsed.TotalSeconds },
        };
        return (metrics, results);
    }
}
