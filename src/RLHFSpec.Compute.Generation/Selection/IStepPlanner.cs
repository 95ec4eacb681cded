using RLHFSpec.Compute.Drafting;
namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// The plan half of a step: for the live batch, the strategy and each sample's draft depth. A fixed strategy
/// (<see cref="FixedStrategyPlanner"/>) and the adaptive <see cref="StrategySelector"/> are the two implementations.
/// </summary>
public interface IStepPlanner
{
    /// <summary>Every strategy a plan may name (the instance checks it has their proposers).</summary>
    IReadOnlyList<Strategy> Strategies { get; }

    /// <summary>Whether plans are predictions worth recording and correcting with the measured step time (adaptive selection).</summary>
    bool Adaptive { get; }

    /// <summary>The plan for <paramref name="samples"/>; its depths are in their order (not yet capped by the context limit).</summary>
    StepPlan Plan(IReadOnlyList<LiveSample> samples);
}
