using RLHFSpec.Compute.Generation;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>An iteration's responses with their rewards, and what the algorithm derives from the rewards alone.</summary>
/// <param name="Results">The responses in request order.</param>
/// <param name="Rewards">[responses] outcome rewards.</param>
internal sealed record ScoredRollouts(IReadOnlyList<SampleResult> Results, double[] Rewards)
{
    /// <summary>GRPO: [responses] group-normalised advantages (null for an algorithm whose advantages need the critic).</summary>
    public double[]? ResponseAdvantages { get; init; }
}
