using System.Text.Json;
using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>A metric at the first and the last iteration that has it.</summary>
public sealed record FirstLast(
    [property: JsonPropertyName("first")] double First,
    [property: JsonPropertyName("last")] double Last,
    [property: JsonPropertyName("first_iteration")] int FirstIteration,
    [property: JsonPropertyName("last_iteration")] int LastIteration)
{
    public static FirstLast? Of<T>(IReadOnlyList<T> items, Func<T, int> iteration, Func<T, double> value) =>
        items.Count == 0 ? null : new FirstLast(value(items[0]), value(items[^1]), iteration(items[0]), iteration(items[^1]));
}

/// <summary>
/// What a run did, as <c>summary.json</c> in its folder and the table the CLI prints at its end: held-out evaluation
/// and rollout reward first → last, seconds per stage, generation speed, migrations, and the checkpoint to use.
/// </summary>
public sealed record RunSummary
{
    [JsonPropertyName("run")] public string Run { get; init; } = "";
    [JsonPropertyName("algorithm")] public string Algorithm { get; init; } = "";
    [JsonPropertyName("iterations")] public int Iterations { get; init; }
    [JsonPropertyName("iterations_planned")] public int IterationsPlanned { get; init; }
    [JsonPropertyName("eval_prompts")] public int EvalPrompts { get; init; }
    /// <summary>Held-out accuracy (and mean reward) of the first evaluation (iteration 0 when evaluated before training) and the last.</summary>
    [JsonPropertyName("eval_accuracy")] public FirstLast? EvalAccuracy { get; init; }
    [JsonPropertyName("eval_reward_mean")] public FirstLast? EvalRewardMean { get; init; }
    /// <summary>The first and the last evaluation compared answer by answer, with the change's standard error (null without two evaluations' answer files).</summary>
    [JsonPropertyName("eval_paired")] public PairedChange? EvalPaired { get; init; }
    /// <summary>Mean reward of the rollouts (fresh prompts each iteration: noisy, see the README).</summary>
    [JsonPropertyName("reward_mean")] public FirstLast? RewardMean { get; init; }
    [JsonPropertyName("accuracy")] public FirstLast? Accuracy { get; init; }
    [JsonPropertyName("kl_last")] public double? KlLast { get; init; }
    /// <summary>Seconds per stage summed over the run's iterations (evaluation included when it ran).</summary>
    [JsonPropertyName("seconds_per_stage")] public Dictionary<string, double> SecondsPerStage { get; init; } = new();
    [JsonPropertyName("seconds")] public double Seconds { get; init; }
    /// <summary>Response tokens per second of generation over the run (the iterations' rates weighted by their generation time).</summary>
    [JsonPropertyName("generation_tokens_per_second")] public double GenerationTokensPerSecond { get; init; }
    /// <summary>Mean over iterations of the draft tokens accepted per sample-step.</summary>
    [JsonPropertyName("mean_accepted_per_step")] public double MeanAcceptedPerStep { get; init; }
    [JsonPropertyName("migrations")] public long Migrations { get; init; }
    /// <summary>The policy folder to use: the saved checkpoint with the best held-out accuracy, else the latest.</summary>
    [JsonPropertyName("checkpoint")] public string? Checkpoint { get; init; }
    [JsonPropertyName("checkpoint_reason")] public string? CheckpointReason { get; init; }
    [JsonPropertyName("latest_checkpoint")] public string? LatestCheckpoint { get; init; }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <param name="policies">Iteration → policy folder of each complete checkpoint on disk (0: the run's reference, the initial policy).</param>
    public static RunSummary From(string run, RlhfConfig config, IReadOnlyList<IterationMetrics> history, IReadOnlyList<EvaluationMetrics> evaluations,
        int evalPrompts, IReadOnlyDictionary<int, string> policies, string? latest)
    {
        var seconds = new Dictionary<string, double>();
        foreach (var m in history)
            foreach (var (stage, s) in m.Seconds) seconds[stage] = seconds.GetValueOrDefault(stage) + s;
        foreach (var e in evaluations.Where(e => e.Iteration == 0))
            seconds["evaluation"] = seconds.GetValueOrDefault("evaluation") + e.Seconds.GetValueOrDefault("evaluation");
        double generation = history.Sum(m => m.Seconds.GetValueOrDefault("generation"));
        // The checkpoint to use: the best evaluated one on disk (accuracy, then mean reward, then the later), else the latest.
        var best = evaluations.Where(e => policies.ContainsKey(e.Iteration))
            .OrderByDescending(e => e.Accuracy).ThenByDescending(e => e.RewardMean).ThenByDescending(e => e.Iteration).FirstOrDefault();
        string? latestPolicy = latest is null ? null : Path.Combine(latest, "policy");
        return new RunSummary
        {
            Run = run,
            Algorithm = SettingText.Name(config.Algorithm),
            Iterations = history.Count == 0 ? 0 : history[^1].Iteration,
            IterationsPlanned = config.Iterations,
            EvalPrompts = evalPrompts,
            EvalAccuracy = FirstLast.Of(evaluations, e => e.Iteration, e => e.Accuracy),
            EvalRewardMean = FirstLast.Of(evaluations, e => e.Iteration, e => e.RewardMean),
            RewardMean = FirstLast.Of(history, m => m.Iteration, m => m.RewardMean),
            Accuracy = FirstLast.Of(history, m => m.Iteration, m => m.Accuracy),
            KlLast = history.Count == 0 ? null : history[^1].Kl,
            SecondsPerStage = seconds,
            Seconds = seconds.Values.Sum(),
            GenerationTokensPerSecond = generation > 0 ? history.Sum(m => m.GenerationTokensPerSecond * m.Seconds.GetValueOrDefault("generation")) / generation : 0,
            MeanAcceptedPerStep = history.Count == 0 ? 0 : history.Average(m => m.MeanAcceptedPerStep),
            Migrations = history.Sum(m => m.Migrations),
            Checkpoint = best is not null ? policies[best.Iteration] : latestPolicy,
            CheckpointReason = best is null ? (latestPolicy is null ? null : "the latest checkpoint (no saved checkpoint was evaluated)")
                : best.Iteration == 0 ? $"the initial policy: no saved checkpoint beat its held-out accuracy ({best.Accuracy:P1})"
                : $"best held-out accuracy ({best.Accuracy:P1}) among the saved checkpoints (iteration {best.Iteration})",
            LatestCheckpoint = latestPolicy,
        };
    }
}
