using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

/// <summary>How an instance generates: batch limit, stop tokens, and the planner (a fixed strategy or adaptive selection).</summary>
public sealed record GenerationOptions
{
    /// <summary>Most samples decoding at once.</summary>
    public int MaxBatch { get; init; } = 256;

    /// <summary>Most prompt tokens prefilled in one forward.</summary>
    public int MaxPrefillTokens { get; init; } = 4096;

    public IReadOnlySet<int> StopTokens { get; init; } = new HashSet<int>();

    /// <summary>Plans each step: <see cref="FixedStrategyPlanner"/>, or the adaptive <see cref="StrategySelector"/>.</summary>
    public IStepPlanner Planner { get; init; } = new FixedStrategyPlanner(Strategy.Off);
}
