namespace RLHFSpec.Compute.Model;

/// <summary>
/// A model that keeps a running total of the seconds its forwards spent in attention. The cost model then prices
/// attention by the keys it reads and the rest of a forward by its tokens, each from its own measurement; fitted
/// together from step times alone the two drifted apart over a workload (a 16-token step predicted at 0.5 ms of
/// dense work and 64 ms of attention; it took 14 ms).
/// </summary>
public interface IAttentionClock
{
    /// <summary>Seconds spent in attention over every forward so far.</summary>
    double AttentionSeconds { get; }
}
