namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// An instance's live load as the reallocator sees it: its samples (live, waiting and queued for it) and its
/// measured step time (<see cref="StepTime.IsKnown"/> false before its first step).
/// </summary>
public sealed record InstanceLoad(int Instance, IReadOnlyList<SampleLoad> Samples, StepTime StepTime)
{
    /// <summary>Predicted tokens still to generate over all its samples.</summary>
    public double PredictedWork => Samples.Sum(s => s.PredictedRemaining);
}
