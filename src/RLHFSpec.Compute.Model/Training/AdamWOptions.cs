namespace RLHFSpec.Compute.Model.Training;

/// <summary>AdamW hyper-parameters (defaults as in PyTorch's AdamW, plus clipping at 1.0 as usual for RLHF).</summary>
public sealed record AdamWOptions
{
    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Constant(1e-3);
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>Decoupled weight decay (applied as w ← w − lr·λ·w) to parameters registered with decay on.</summary>
    public double WeightDecay { get; init; } = 0.01;

    /// <summary>Global L2 gradient-norm clip; 0 or +∞ turns clipping off.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    internal void Validate()
    {
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentException($"AdamW: beta1 must be in [0, 1), got {Beta1}");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentException($"AdamW: beta2 must be in [0, 1), got {Beta2}");
        if (!(Epsilon > 0)) throw new ArgumentException($"AdamW: epsilon must be > 0, got {Epsilon}");
        if (!(WeightDecay >= 0)) throw new ArgumentException($"AdamW: weight decay must be >= 0, got {WeightDecay}");
        if (!(MaxGradNorm >= 0)) throw new ArgumentException($"AdamW: max gradient norm must be >= 0, got {MaxGradNorm}");
        ArgumentNullException.ThrowIfNull(Schedule);
    }
}
