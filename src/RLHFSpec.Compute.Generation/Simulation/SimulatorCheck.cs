namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// One side of a simulator validation: the completion time a real cluster run measured, the one the simulator
/// predicted for the same workload (same lengths, instances, assignment, measured cost profile), and the samples
/// each moved between instances (KV copies + recomputes); and, to tell where an error comes from, the busy seconds
/// summed over instances, the decoding steps and the tokens a sample emits per step, measured and predicted.
/// </summary>
public sealed record SimulatorCheck(string Side, double MeasuredSeconds, double PredictedSeconds, long MeasuredMoves, long PredictedMoves)
{
    public double MeasuredBusySeconds { get; init; }
    public double PredictedBusySeconds { get; init; }

    /// <summary>Of the measured busy seconds: the parts the cost model times (draft + verify forward), and prefill.</summary>
    public double MeasuredForwardSeconds { get; init; }

    public double MeasuredPrefillSeconds { get; init; }
    public long MeasuredSteps { get; init; }
    public long PredictedSteps { get; init; }
    public double MeasuredTokensPerSampleStep { get; init; }
    public double PredictedTokensPerSampleStep { get; init; }

    /// <summary>(predicted − measured) / measured.</summary>
    public double RelativeError => (PredictedSeconds - MeasuredSeconds) / MeasuredSeconds;
}
