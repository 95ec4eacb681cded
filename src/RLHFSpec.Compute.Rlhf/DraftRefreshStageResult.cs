namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// What the draft refresh stage measured: the updated policy's mean entropy over the rollouts' response tokens and,
/// when a draft was refreshed, its token-weighted KL to the policy and acceptance before and after (null otherwise).
/// </summary>
internal sealed record DraftRefreshStageResult(double Entropy, double? KlBefore, double? KlAfter, double? AcceptanceBefore, double? AcceptanceAfter)
{
    /// <summary>Whether the draft was distilled this iteration (null without a refreshed draft).</summary>
    public bool? Distilled { get; init; }

    /// <summary>Seconds of the stage spent on the draft (its forwards and distillation steps; the rest is the policy's
    /// entropy forward, which a run without a draft pays too); null without a refreshed draft.</summary>
    public double? DraftSeconds { get; init; }
}
