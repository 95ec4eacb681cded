using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// How the generation stage (<see cref="Generator"/>) runs: the strategy mode (a fixed strategy, <c>off</c> included,
/// or adaptive) with the adaptive candidates and cost profile it builds the planner from, batch limits, stop tokens.
/// Each instance it runs gets <see cref="InstanceOptions"/> made from these.
/// </summary>
public sealed record GeneratorSettings
{
    /// <summary>Adaptive, or a fixed strategy (<c>off</c>, <c>chain:K</c>, <c>tree:D,K,B</c>, <c>suffix:K</c>, <c>suffix-tree:D,K,B</c>).</summary>
    public StrategyMode Strategy { get; init; } = StrategyMode.Adaptive;

    public int MaxBatch { get; init; } = 64;

    public int MaxPrefillTokens { get; init; } = 4096;

    public IReadOnlySet<int> StopTokens { get; init; } = new HashSet<int>();

    /// <summary>Cost profile file: loaded (frozen) when it exists, else measured at start-up and saved there. Null = measure, keep in memory.</summary>
    public string? CostProfilePath { get; init; }

    /// <summary>Largest step (tokens) the start-up profile times.</summary>
    public int ProfileMaxTokens { get; init; } = 256;

    /// <summary>Candidates of <c>adaptive</c> (off is always one); null = <see cref="Generator.DefaultCandidates"/>.</summary>
    public IReadOnlyList<Strategy>? Candidates { get; init; }

    /// <summary>Receives a record of every decode step of every instance; null = none.</summary>
    public IStepTrace? StepTrace { get; init; }

    public bool IsAdaptive => Strategy.IsAdaptive;

    public void Validate()
    {
        if (MaxBatch < 1) throw new ArgumentException($"max batch: {MaxBatch}, must be >= 1", nameof(MaxBatch));
        if (MaxPrefillTokens < 1) throw new ArgumentException($"max prefill tokens: {MaxPrefillTokens}, must be >= 1", nameof(MaxPrefillTokens));
        if (ProfileMaxTokens < 1) throw new ArgumentException($"profile max tokens: {ProfileMaxTokens}, must be >= 1", nameof(ProfileMaxTokens));
    }
}
