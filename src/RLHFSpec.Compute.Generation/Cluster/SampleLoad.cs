namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>A sample as the reallocator sees it: predicted tokens still to generate, and what moving it would cost (s).</summary>
public readonly record struct SampleLoad(long SampleId, double PredictedRemaining, double MoveSeconds);
