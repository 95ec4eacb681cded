using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>One line of a run's metrics JSONL: what one RLHF iteration did and where its time went.</summary>
public sealed record IterationMetrics
{
    [JsonPropertyName("iteration")] public int Iteration { get; init; }
    [JsonPropertyName("reward_mean")] public double RewardMean { get; init; }
    [JsonPropertyName("reward_std")] public double RewardStd { get; init; }
    /// <summary>Share of responses with reward ≥ 1; with a reward model on default-task prompts, the share the task's exact verifier accepts.</summary>
    [JsonPropertyName("accuracy")] public double Accuracy { get; init; }
    /// <summary>Mean over response tokens of log π(x) − log π_ref(x) (before the update).</summary>
    [JsonPropertyName("kl")] public double Kl { get; init; }
    /// <summary>Mean entropy of the updated policy over the rollouts' response positions.</summary>
    [JsonPropertyName("entropy")] public double Entropy { get; init; }
    [JsonPropertyName("loss")] public double Loss { get; init; }
    [JsonPropertyName("grad_norm")] public double GradNorm { get; init; }
    [JsonPropertyName("response_length_mean")] public double ResponseLengthMean { get; init; }
    [JsonPropertyName("response_length_p50")] public double ResponseLengthP50 { get; init; }
    [JsonPropertyName("response_length_p99")] public double ResponseLengthP99 { get; init; }
    [JsonPropertyName("seconds")] public Dictionary<string, double> Seconds { get; init; } = new();
    [JsonPropertyName("generation_tokens_per_second")] public double GenerationTokensPerSecond { get; init; }
    [JsonPropertyName("mean_accepted_per_step")] public double MeanAcceptedPerStep { get; init; }
    [JsonPropertyName("mean_emitted_per_sample_step")] public double MeanEmittedPerSampleStep { get; init; }
    [JsonPropertyName("strategy_histogram")] public Dictionary<string, long> StrategyHistogram { get; init; } = new();
    /// <summary>Live samples moved between generation instances (KV copied or recomputed on the target); 0 with one instance.</summary>
    [JsonPropertyName("migrations")] public long Migrations { get; init; }
    [JsonPropertyName("draft_kl_before")] public double? DraftKlBefore { get; init; }
    [JsonPropertyName("draft_kl_after")] public double? DraftKlAfter { get; init; }
    /// <summary>Mean Σ min(p, q) per response token: the chance one draft token is accepted, before the refresh.</summary>
    [JsonPropertyName("draft_acceptance_before")] public double? DraftAcceptanceBefore { get; init; }
    [JsonPropertyName("draft_acceptance_after")] public double? DraftAcceptanceAfter { get; init; }
    /// <summary>Whether the draft was distilled this iteration (<c>draft_refresh_tolerance</c>); without distillation
    /// "after" equals "before". Absent without a refreshed draft.</summary>
    [JsonPropertyName("draft_refreshed"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public bool? DraftRefreshed { get; init; }
    /// <summary>Seconds of the draft_refresh stage spent on the draft (its forwards and distillation steps), out of
    /// <c>seconds.draft_refresh</c>; the rest is the policy's entropy forward. Absent without a refreshed draft.</summary>
    [JsonPropertyName("draft_refresh_draft_seconds"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? DraftRefreshDraftSeconds { get; init; }
    /// <summary>PPO: mean clipped value loss of the critic's steps (times value_coef); absent for GRPO.</summary>
    [JsonPropertyName("value_loss"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ValueLoss { get; init; }
    /// <summary>PPO: mean critic value over response tokens in the inference stage (before the update).</summary>
    [JsonPropertyName("value_mean"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ValueMean { get; init; }
    /// <summary>PPO: 1 − Var(returns − values) / Var(returns) over response tokens: how much of the returns the critic explains.</summary>
    [JsonPropertyName("explained_variance"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ExplainedVariance { get; init; }
    /// <summary>Held-out evaluation after this iteration (see <see cref="EvaluationMetrics"/>); absent when none was due.</summary>
    [JsonPropertyName("eval_reward_mean"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? EvalRewardMean { get; init; }
    [JsonPropertyName("eval_accuracy"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? EvalAccuracy { get; init; }
    [JsonPropertyName("eval_response_length_mean"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? EvalResponseLengthMean { get; init; }
    [JsonPropertyName("eval_truncated"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? EvalTruncated { get; init; }

    /// <summary>The evaluation after this iteration, or null.</summary>
    [JsonIgnore]
    public EvaluationMetrics? Evaluation => EvalRewardMean is { } reward
        ? new EvaluationMetrics
        {
            Iteration = Iteration, RewardMean = reward, Accuracy = EvalAccuracy ?? 0, ResponseLengthMean = EvalResponseLengthMean ?? 0,
            Truncated = EvalTruncated ?? 0, Seconds = new() { ["evaluation"] = Seconds.GetValueOrDefault("evaluation") },
        }
        : null;

    /// <summary>This iteration's line with <paramref name="e"/> merged in (its time as the stage "evaluation").</summary>
    public IterationMetrics WithEvaluation(EvaluationMetrics e) => this with
    {
        EvalRewardMean = e.RewardMean, EvalAccuracy = e.Accuracy, EvalResponseLengthMean = e.ResponseLengthMean, EvalTruncated = e.Truncated,
        Seconds = new Dictionary<string, double>(Seconds) { ["evaluation"] = e.Seconds.GetValueOrDefault("evaluation") },
    };
}
