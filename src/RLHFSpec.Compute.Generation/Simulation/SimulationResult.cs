namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>Outcome of a simulated generation stage.</summary>
public sealed record SimulationResult(
    double CompletionSeconds,
    double[] InstanceFinishSeconds,
    double[] InstanceBusySeconds,
    int Migrations,
    int Recomputes,
    double KvBytesMoved,
    long Tokens);
