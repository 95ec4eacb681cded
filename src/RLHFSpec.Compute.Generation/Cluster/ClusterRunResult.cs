namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>What one <see cref="GenerationCluster.Run"/> produced: every sample's <see cref="SampleResult"/> (each exactly once, in order of completion) and what the run did.</summary>
public sealed record ClusterRunResult(IReadOnlyList<SampleResult> Results, ClusterStats Stats);
