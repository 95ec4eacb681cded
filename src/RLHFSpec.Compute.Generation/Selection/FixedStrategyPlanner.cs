using RLHFSpec.Compute.Drafting;
namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>The same strategy every step; each sample drafts its depth, or fewer when fewer tokens are left to generate.</summary>
public sealed class FixedStrategyPlanner : IStepPlanner
{
    public FixedStrategyPlanner(Strategy strategy)
    {
        Strategy = strategy;
    }

    public Strategy Strategy { get; }

    public IReadOnlyList<Strategy> Strategies => [Strategy];

    public bool Adaptive => false;

    public StepPlan Plan(IReadOnlyList<LiveSample> samples)
    {
        var depths = new int[samples.Count];
        if (!Strategy.IsOff)
            for (int i = 0; i < depths.Length; i++) depths[i] = Math.Min(Strategy.Depth, samples[i].RemainingTokens - 1);
        return new StepPlan(Strategy, depths, double.NaN, double.NaN, []);
    }

    public override string ToString() => Strategy.ToString();
}
