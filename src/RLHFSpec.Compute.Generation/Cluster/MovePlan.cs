namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>Samples to move from one instance to another, and the completion time the move is predicted to save (s).</summary>
public sealed record MovePlan(int From, int To, IReadOnlyList<long> SampleIds, double PredictedGainSeconds);
