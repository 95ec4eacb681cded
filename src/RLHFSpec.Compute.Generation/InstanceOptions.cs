using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// How one <see cref="GenerationInstance"/> steps: batch limit, stop tokens, and the planner already built (a fixed
/// strategy or adaptive selection); <see cref="GeneratorSettings"/> are the generation stage's settings these come from.
/// </summary>
public sealed record InstanceOptions
{
    /// <summary>Most samples decoding at once.</summary>
    public int MaxBatch { get; init; } = 256;

    /// <summary>Most prompt tokens prefilled in one forward.</summary>
    public int MaxPrefillTokens { get; init; } = 4096;

    public IReadOnlySet<int> StopTokens { get; init; } = new HashSet<int>();

    /// <summary>
    /// Samples admitted together with the same prompt (a GRPO group) prefill it once: the others get a copy of its KV
    /// and the same last-token logits, each drawing its own first token. With batch-invariant kernels (the CPU's) these
    /// are the numbers each would have computed, to the bit; the Vulkan dense executor's few-row and many-row paths
    /// round differently, so there they agree within rounding. Needs a model that copies KV (<see cref="Model.IMigratableModel"/>).
    /// </summary>
    public bool SharePromptPrefill { get; init; } = true;

    /// <summary>Plans each step: <see cref="FixedStrategyPlanner"/>, or the adaptive <see cref="StrategySelector"/>.</summary>
    public IStepPlanner Planner { get; init; } = new FixedStrategyPlanner(Strategy.Off);

    /// <summary>The instance's number in its cluster (0 when it runs alone); step traces name it.</summary>
    public int Index { get; init; }

    /// <summary>Receives a record of every decode step (what was planned and predicted, what it cost); null = none.</summary>
    public IStepTrace? StepTrace { get; init; }
}
