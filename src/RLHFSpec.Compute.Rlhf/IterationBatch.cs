using RLHFSpec.Compute.Generation;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The one record an iteration's stages exchange. Generation creates it (prompts, responses, generation statistics);
/// inference adds rewards, log-probs, critic values and advantages; training and the draft refresh add what they
/// measured. Each stage returns a new record (<c>with</c>); none changes the one it was given.
/// </summary>
internal sealed record IterationBatch(int Iteration, IReadOnlyList<string> Prompts, GeneratorRunResult Outcome)
{
    /// <summary>The responses in request order.</summary>
    public IReadOnlyList<SampleResult> Results => Outcome.Results;

    /// <summary>[responses] outcome rewards.</summary>
    public double[] Rewards { get; init; } = [];

    /// <summary>Share of responses with full reward (see <see cref="IterationMetrics.Accuracy"/>).</summary>
    public double Accuracy { get; init; }

    /// <summary>The rollouts bucketed by length, with everything the losses read.</summary>
    public IReadOnlyList<RolloutMinibatch> Minibatches { get; init; } = [];

    /// <summary>Mean over response tokens of log π_old − log π_ref.</summary>
    public double Kl { get; init; }

    /// <summary>PPO's critic statistics; null without a critic.</summary>
    public CriticStatistics? Critic { get; init; }

    public TrainingStageResult? Training { get; init; }
    public DraftRefreshStageResult? Refresh { get; init; }

    /// <summary>The iteration's metrics line, with the seconds of its named stages.</summary>
    public IterationMetrics ToMetrics(Dictionary<string, double> seconds)
    {
        var lengths = Results.Select(r => (double)r.Tokens.Length).OrderBy(x => x).ToArray();
        double mean = Rewards.Average();
        var s = Outcome.Stats;
        var training = Training ?? new TrainingStageResult(0, 0, 0, null);
        var refresh = Refresh ?? new DraftRefreshStageResult(0, null, null, null, null);
        return new IterationMetrics
        {
            Iteration = Iteration,
            RewardMean = mean,
            RewardStd = Math.Sqrt(Rewards.Average(r => (r - mean) * (r - mean))),
            Accuracy = Accuracy,
            Kl = Kl,
            Entropy = refresh.Entropy,
            Loss = training.Loss,
            GradNorm = training.GradNorm,
            ResponseLengthMean = lengths.Average(),
            ResponseLengthP50 = Percentile(lengths, 0.5),
            ResponseLengthP99 = Percentile(lengths, 0.99),
            Seconds = seconds,
            GenerationTokensPerSecond = s.TokensGenerated / Math.Max(Outcome.WallSeconds, 1e-9),
            MeanAcceptedPerStep = s.MeanAcceptedPerSampleStep,
            MeanEmittedPerSampleStep = s.MeanEmittedPerSampleStep,
            StrategyHistogram = s.StrategyHistogram.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value),
            Migrations = Outcome.Cluster is { } c ? c.Migrations + c.Recomputes : 0,
            DraftKlBefore = refresh.KlBefore,
            DraftKlAfter = refresh.KlAfter,
            DraftAcceptanceBefore = refresh.AcceptanceBefore,
            DraftAcceptanceAfter = refresh.AcceptanceAfter,
            DraftRefreshed = refresh.Distilled,
            DraftRefreshDraftSeconds = refresh.DraftSeconds,
            ValueLoss = training.ValueLoss,
            ValueMean = Critic?.ValueMean,
            ExplainedVariance = Critic?.ExplainedVariance,
        };
    }

    /// <summary>Nearest-rank percentile of an ascending array (0 for an empty one).</summary>
    private static double Percentile(double[] sorted, double q) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
}
