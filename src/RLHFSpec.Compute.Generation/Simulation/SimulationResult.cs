namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>Outcome of a simulated generation stage (<see cref="Steps"/>: decoding steps over all instances; <see cref="SampleSteps"/>: Σ live batch over those steps).</summary>
public sealed record SimulationResult(
    double CompletionSeconds,
    double[] InstanceFinishSeconds,
    double[] InstanceBusySeconds,
    int Migrations,
    int Recomputes,
    double KvBytesMoved,
    long Tokens,
    long Steps = 0,
    long SampleSteps = 0)
{
    /// <summary>Samples moved before their prefill (nothing to copy or recompute; not counted in <see cref="Migrations"/> or <see cref="Recomputes"/>).</summary>
    public int Reassigned { get; init; }
}
