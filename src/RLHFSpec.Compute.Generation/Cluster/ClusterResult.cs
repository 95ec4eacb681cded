namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>Every sample's result (each exactly once, in order of completion) and what the run did.</summary>
public sealed record ClusterResult(IReadOnlyList<GenerationResult> Results, ClusterStats Stats);
