namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>How a <see cref="GenerationCluster"/> assigns, moves and recovers samples.</summary>
public sealed record ClusterOptions
{
    /// <summary>
    /// Move samples from loaded instances to drained ones while generation runs. It pays when instances compute
    /// independently (a device each); instances sharing one CPU's cores only take cores from each other (measured on
    /// 2 loaded cores: 1.5–4× slower than static on a long tail), so turn it off there.
    /// </summary>
    public bool Reallocate { get; init; } = true;

    public AssignmentPolicy Assignment { get; init; } = AssignmentPolicy.PredictedLength;

    public MigrationMode Migration { get; init; } = MigrationMode.Auto;

    /// <summary>An instance holding at most this many samples (live + waiting) counts as drained and takes work.</summary>
    public int DrainThreshold { get; init; }

    /// <summary>
    /// Move only when the predicted completion time gain exceeds the predicted move cost (the default). Off, every
    /// drained instance takes half of the excess whatever it costs — for tests that need moves to happen.
    /// </summary>
    public bool RequireGain { get; init; } = true;

    /// <summary>KV copy bandwidth (bytes/s) assumed until a copy has been timed.</summary>
    public double AssumedCopyBytesPerSecond { get; init; } = 1e9;

    /// <summary>Prefill rate (tokens/s) assumed until an instance has prefilled.</summary>
    public double AssumedPrefillTokensPerSecond { get; init; } = 1e4;

    /// <summary>
    /// Fault injection for tests: called on an instance's worker thread before each of its steps with (instance,
    /// step number on that instance, counted from 0 over the cluster's life); an exception it throws fails that
    /// instance exactly as a throwing step would.
    /// </summary>
    public Action<int, long>? BeforeStep { get; init; }

    /// <summary>
    /// Fault injection and observation for tests: called on a receiver's worker thread, outside the cluster's lock,
    /// with (receiver, sample id) before it copies in a sample whose move overlaps the donor's steps; an exception it
    /// throws fails the receiver as a throwing step would (the sample is re-admitted elsewhere).
    /// </summary>
    public Action<int, long>? BeforeMigrationCopy { get; init; }

    /// <summary>
    /// Called with an instance's index on its worker thread, under the cluster's lock, each time it runs out of work
    /// and starts waiting (monitoring; tests that need a drained instance). Keep it short; it must not call the cluster.
    /// </summary>
    public Action<int>? OnIdle { get; init; }

    public void Validate()
    {
        if (DrainThreshold < 0) throw new ArgumentOutOfRangeException(nameof(DrainThreshold), DrainThreshold, "must be >= 0");
        if (!(AssumedCopyBytesPerSecond > 0)) throw new ArgumentOutOfRangeException(nameof(AssumedCopyBytesPerSecond), AssumedCopyBytesPerSecond, "must be > 0");
        if (!(AssumedPrefillTokensPerSecond > 0)) throw new ArgumentOutOfRangeException(nameof(AssumedPrefillTokensPerSecond), AssumedPrefillTokensPerSecond, "must be > 0");
    }
}
