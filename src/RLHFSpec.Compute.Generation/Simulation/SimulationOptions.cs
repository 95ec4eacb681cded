using RLHFSpec.Compute.Generation.Cluster;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>How the simulated cluster assigns and moves samples, and what a move costs.</summary>
public sealed record SimulationOptions
{
    public int Instances { get; init; } = 4;

    /// <summary>Most live samples per instance (its batch limit).</summary>
    public int MaxBatch { get; init; } = 256;

    /// <summary>Move samples from loaded to drained instances while the run goes on.</summary>
    public bool Reallocate { get; init; }

    /// <summary>Assign initially by predicted length (longest first onto the least loaded), else round-robin.</summary>
    public bool AssignByPredictedLength { get; init; }

    /// <summary>KV bytes per committed token (all layers, K and V): what a migration copies.</summary>
    public double KvBytesPerToken { get; init; } = 2 * 24 * 2 * 128 * 2;

    /// <summary>Measured bandwidth of moving KV between instances (bytes/s).</summary>
    public double MigrationBytesPerSecond { get; init; } = 10e9;

    /// <summary>Fixed cost of one migration (s): scheduling, proposer state, a kernel launch.</summary>
    public double MigrationLatencySeconds { get; init; } = 200e-6;

    /// <summary>
    /// Measured seconds a step spends outside the forwards the cost profile times (verify kernel, sampling,
    /// proposer bookkeeping); 0 = not modelled.
    /// </summary>
    public double StepOverheadSeconds { get; init; }

    /// <summary>Measured prefill seconds per prompt token of a fresh sample on admission; 0 = not modelled.</summary>
    public double PrefillSecondsPerToken { get; init; }

    /// <summary>An instance with at most this many samples (live + waiting) counts as drained and takes work (<see cref="ClusterOptions.DrainThreshold"/>).</summary>
    public int DrainThreshold { get; init; } = 0;

    /// <summary>Move only when the reallocator predicts a gain (<see cref="ClusterOptions.RequireGain"/>).</summary>
    public bool RequireGain { get; init; } = true;

    /// <summary>How moved live samples travel: KV copy, re-prefill, or the cheaper (<see cref="ClusterOptions.Migration"/>).</summary>
    public MigrationMode Migration { get; init; } = MigrationMode.Auto;
}
