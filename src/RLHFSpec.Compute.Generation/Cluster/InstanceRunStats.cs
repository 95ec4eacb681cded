namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// One instance in one cluster run: seconds stepping (busy) and not (idle: drained, or waiting at a step
/// boundary), when its last sample finished (seconds from the run's start; 0 if none did), steps, and the
/// failure that stopped it, if any.
/// </summary>
public sealed record InstanceRunStats(int Instance, double BusySeconds, double IdleSeconds, double LastFinishSeconds, long Steps, int SamplesFinished, string? Failure);
