namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// The move-cost model shared by <see cref="GenerationCluster"/> and the simulator: a live sample moves either by
/// copying its KV blocks (<c>copySeconds</c>: +∞ when the model cannot copy) or by re-prefilling its committed
/// tokens on the target (<c>recomputeSeconds</c>); <see cref="MigrationMode"/> forces one or picks the cheaper.
/// Each side supplies the two estimates from its own measurements; the decision is this one.
/// </summary>
public static class MoveCost
{
    /// <summary>Whether the move copies the KV blocks (else it recomputes them).</summary>
    public static bool PrefersCopy(MigrationMode mode, double copySeconds, double recomputeSeconds) => mode switch
    {
        MigrationMode.Copy => double.IsFinite(copySeconds),
        MigrationMode.Recompute => false,
        _ => copySeconds < recomputeSeconds,
    };

    /// <summary>Seconds the move takes, by the way <see cref="PrefersCopy"/> chooses.</summary>
    public static double Seconds(MigrationMode mode, double copySeconds, double recomputeSeconds) =>
        PrefersCopy(mode, copySeconds, recomputeSeconds) ? copySeconds : recomputeSeconds;

    /// <summary>Seconds to copy <paramref name="bytes"/> of KV at <paramref name="bytesPerSecond"/> after a fixed <paramref name="latencySeconds"/>.</summary>
    public static double CopySeconds(double bytes, double bytesPerSecond, double latencySeconds = 0) => latencySeconds + bytes / bytesPerSecond;

    /// <summary>Seconds to re-prefill a sample's committed tokens (all but the last, which the next step feeds) at <paramref name="tokensPerSecond"/>.</summary>
    public static double RecomputeSeconds(int committedTokens, double tokensPerSecond) => Math.Max(0, committedTokens - 1) / tokensPerSecond;
}
