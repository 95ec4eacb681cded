namespace RLHFSpec.Compute.Rlhf;

/// <summary>Settings of <see cref="RewardModelTrainer"/>; <see cref="Validate"/> names the bad one.</summary>
public sealed record RewardTrainingOptions
{
    public int Epochs { get; init; } = 2;
    /// <summary>Pairs per gradient step (2 × this many sequences).</summary>
    public int BatchSize { get; init; } = 16;
    public double LearningRate { get; init; } = 1e-3;
    public double WeightDecay { get; init; }
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>Coefficient of the mean squared reward added to the Bradley–Terry loss (0 = none).</summary>
    public double RewardL2 { get; init; }
    public int Seed { get; init; } = 1;
    /// <summary>Share of the pairs held out to measure pairwise accuracy (at least one pair when > 0).</summary>
    public double EvalFraction { get; init; } = 0.1;
    public int Threads { get; init; }
    public string Ep { get; init; } = "cpu";

    public void Validate()
    {
        if (Epochs < 1) throw new ArgumentException($"--epochs: {Epochs}, must be >= 1");
        if (BatchSize < 1) throw new ArgumentException($"--batch-size: {BatchSize}, must be >= 1");
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate)) throw new ArgumentException($"--learning-rate: {LearningRate}, must be a finite number > 0");
        if (!(WeightDecay >= 0) || !double.IsFinite(WeightDecay)) throw new ArgumentException($"--weight-decay: {WeightDecay}, must be >= 0");
        if (!(MaxGradNorm > 0)) throw new ArgumentException($"--max-grad-norm: {MaxGradNorm}, must be > 0");
        if (!(RewardL2 >= 0) || !double.IsFinite(RewardL2)) throw new ArgumentException($"--reward-l2: {RewardL2}, must be a finite number >= 0");
        if (!(EvalFraction >= 0 && EvalFraction < 1)) throw new ArgumentException($"--eval-fraction: {EvalFraction}, must be in [0, 1)");
        if (Threads < 0) throw new ArgumentException($"--threads: {Threads}, must be >= 0");
    }
}
