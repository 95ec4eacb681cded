namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// One workload run with static assignment and with reallocation: the faster run of each (wall seconds), their
/// stats, and whether every sample's tokens agreed between the two (they must at temperature 0 and under a seed).
/// </summary>
public sealed record ReallocationComparison(ClusterStats Static, ClusterStats Reallocated, bool SameOutputs)
{
    /// <summary>Completion time with static assignment over completion time with reallocation.</summary>
    public double Speedup => Static.WallSeconds / Reallocated.WallSeconds;
}
