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
    long SampleSteps = 0);
