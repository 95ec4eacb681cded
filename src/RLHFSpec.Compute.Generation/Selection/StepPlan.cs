using RLHFSpec.Compute.Drafting;
namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// The selector's choice for one step: the strategy, each sample's draft depth (chains may draft different
/// lengths for different samples; 0 = no draft for that sample), the predicted goodput (tokens/s) of the plan and
/// of <c>off</c>, and every candidate's prediction (why this one won).
/// </summary>
public sealed record StepPlan(
    Strategy Strategy,
    int[] DraftDepths,
    double PredictedGoodput,
    double OffGoodput,
    IReadOnlyList<(Strategy Strategy, double Goodput)> Candidates)
{
    /// <summary>The model's predicted wall time of the step, before the measured correction (see <see cref="CostModel.TimeCorrection"/>).</summary>
    public double PredictedSeconds { get; init; }

    /// <summary>
    /// Whether the strategy was chosen only for its optimistic (exploration) acceptance: its drafts are then capped to
    /// a few samples (<see cref="StrategySelector.ExplorationBudget"/>).
    /// </summary>
    public bool Exploring { get; init; }

    public bool PerSampleLengths => DraftDepths.Distinct().Count() > 1;

    /// <summary>The best-predicted candidate other than <see cref="Strategy"/> (null without one): the alternative the step passed over.</summary>
    public (Strategy Strategy, double Goodput)? RunnerUp()
    {
        (Strategy Strategy, double Goodput)? best = null;
        foreach (var c in Candidates)
            if (c.Strategy != Strategy && (best is null || c.Goodput > best.Value.Goodput)) best = c;
        return best;
    }
}
