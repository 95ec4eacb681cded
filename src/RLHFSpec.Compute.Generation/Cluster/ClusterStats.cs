namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// What one cluster run did: its wall time, the moves (KV copies with their bytes, recomputes, reassigned samples
/// that had not started, samples re-admitted after a failure), each instance's busy/idle seconds and last finish,
/// and the instances' generation stats summed (cumulative over the instances' lives).
/// </summary>
public sealed class ClusterStats
{
    public double WallSeconds { get; init; }

    /// <summary>Live samples moved with their KV (copied between caches).</summary>
    public long Migrations { get; init; }

    /// <summary>Of <see cref="Migrations"/>, copies made on the receiver's thread during which the donor went on stepping.</summary>
    public long OverlappedMigrations { get; init; }

    public long KvBytesMoved { get; init; }

    /// <summary>Seconds spent copying KV (what the copy rate was measured from).</summary>
    public double CopySeconds { get; init; }

    /// <summary>Started samples moved without their KV: the target re-prefills their committed tokens.</summary>
    public long Recomputes { get; init; }

    /// <summary>Waiting samples that had not started, moved to another instance's queue.</summary>
    public long Reassigned { get; init; }

    /// <summary>Samples of failed or stopped instances re-admitted elsewhere.</summary>
    public long FailureReadmissions { get; init; }

    public required IReadOnlyList<InstanceRunStats> Instances { get; init; }

    public required GenerationStats Total { get; init; }
}
