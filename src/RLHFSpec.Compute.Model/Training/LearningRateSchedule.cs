namespace RLHFSpec.Compute.Model.Training;

/// <summary>
/// Linear warmup from 0 to <see cref="PeakLr"/> over <see cref="WarmupSteps"/>, then cosine decay to
/// <see cref="MinLr"/> at <see cref="TotalSteps"/>, constant after. Steps are 1-based (the first update is step 1,
/// so warmup never applies a zero learning rate).
/// </summary>
public sealed record LearningRateSchedule
{
    public LearningRateSchedule(double peakLr, int warmupSteps = 0, int totalSteps = 0, double minLr = 0)
    {
        if (!(peakLr >= 0) || double.IsInfinity(peakLr)) throw new ArgumentException($"learning-rate schedule: peak lr must be finite and >= 0, got {peakLr}", nameof(peakLr));
        if (!(minLr >= 0) || minLr > peakLr) throw new ArgumentException($"learning-rate schedule: min lr must be in [0, peak {peakLr}], got {minLr}", nameof(minLr));
        if (warmupSteps < 0) throw new ArgumentException($"learning-rate schedule: warmup steps must be >= 0, got {warmupSteps}", nameof(warmupSteps));
        if (totalSteps != 0 && totalSteps < warmupSteps) throw new ArgumentException($"learning-rate schedule: total steps {totalSteps} < warmup steps {warmupSteps}", nameof(totalSteps));
        PeakLr = peakLr;
        WarmupSteps = warmupSteps;
        TotalSteps = totalSteps;
        MinLr = minLr;
    }

    public double PeakLr { get; }
    public int WarmupSteps { get; }

    /// <summary>Step at which the cosine reaches <see cref="MinLr"/>; 0 = no decay (constant after warmup).</summary>
    public int TotalSteps { get; }
    public double MinLr { get; }

    public static LearningRateSchedule Constant(double lr) => new(lr);

    public double At(long step)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "learning-rate schedule: steps are 1-based");
        if (step <= WarmupSteps) return PeakLr * step / WarmupSteps;
        if (TotalSteps == 0) return PeakLr;
        if (step >= TotalSteps) return MinLr;
        double progress = (double)(step - WarmupSteps) / (TotalSteps - WarmupSteps);
        return MinLr + (PeakLr - MinLr) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
