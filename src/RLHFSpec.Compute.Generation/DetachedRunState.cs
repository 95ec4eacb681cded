using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// What a caller of <see cref="Generator.RunDetached"/> keeps between its runs (a held-out evaluation): its own suffix
/// proposer and acceptance statistics, apart from those of the generator's rollouts.
/// </summary>
public sealed class DetachedRunState
{
    public SuffixProposer Suffix { get; } = new();
    internal AcceptanceEstimator? Acceptance { get; set; }
}
