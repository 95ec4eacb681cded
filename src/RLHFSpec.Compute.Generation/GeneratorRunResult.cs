using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// What one <see cref="Generator.Run"/> produced: every sample's <see cref="SampleResult"/> in request order, the
/// instance's stats, wall time and the step plans' record (a <see cref="Cluster.ClusterRunResult"/> is the same for one
/// run of a cluster, without the plans).
/// </summary>
public sealed record GeneratorRunResult(IReadOnlyList<SampleResult> Results, GenerationStats Stats, double WallSeconds, CostModel? Cost,
    IReadOnlyDictionary<int, Dictionary<Strategy, long>> ChoicesByBatchSize)
{
    /// <summary>Migrations, KV bytes moved, recomputes and per-instance times when several instances ran.</summary>
    public Cluster.ClusterStats? Cluster { get; init; }
}
