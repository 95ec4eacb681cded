namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// An instance's live load as the reallocator sees it: its samples (live, waiting and queued for it) and its
/// measured seconds per generated token (0 = not measured yet).
/// </summary>
public sealed record InstanceLoad(int Instance, IReadOnlyList<SampleLoad> Samples, double SecondsPerToken)
{
    /// <summary>Predicted tokens still to generate over all its samples.</summary>
    public double PredictedWork => Samples.Sum(s => s.PredictedRemaining);
}
