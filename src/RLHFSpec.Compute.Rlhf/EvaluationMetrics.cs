using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// One scoring of the held-out evaluation set (<see cref="HeldOutEvaluation"/>). The evaluation before training is its
/// own line of metrics.jsonl (iteration 0, these keys only); later evaluations are merged into their iteration's line
/// (<see cref="IterationMetrics.Evaluation"/>).
/// </summary>
public sealed record EvaluationMetrics
{
    /// <summary>The iteration after which the policy was scored (0: the initial policy).</summary>
    [JsonPropertyName("iteration")] public int Iteration { get; init; }
    [JsonPropertyName("eval_reward_mean")] public double RewardMean { get; init; }
    /// <summary>Share of evaluation prompts answered with full reward (the task's exact verifier with a reward model on task prompts).</summary>
    [JsonPropertyName("eval_accuracy")] public double Accuracy { get; init; }
    [JsonPropertyName("eval_response_length_mean")] public double ResponseLengthMean { get; init; }
    /// <summary>Share of evaluation responses cut at max_new_tokens (or the context) rather than ended by the policy.</summary>
    [JsonPropertyName("eval_truncated")] public double Truncated { get; init; }
    /// <summary>Only "evaluation": the line's time, as the other lines' stage times.</summary>
    [JsonPropertyName("seconds")] public Dictionary<string, double> Seconds { get; init; } = new();
}
