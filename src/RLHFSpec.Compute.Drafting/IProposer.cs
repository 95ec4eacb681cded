
namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// A drafter behind one interface: it learns a sample when admitted, sees every committed token, drafts trees
/// for a step, and forgets a sample when it finishes or is preempted (preempted samples are admitted again). It
/// reads samples through <see cref="ISampleView"/> only; the step loop owns their state.
/// </summary>
public interface IProposer
{
    ProposerKind Kind { get; }

    void Admit(ISampleView sample);

    /// <summary>Tokens newly committed to the sample's sequence (accepted drafts and the next token).</summary>
    void Append(ISampleView sample, ReadOnlySpan<int> tokens);

    /// <summary>
    /// Drafts for <paramref name="samples"/> with per-sample depth (0 = no draft). A tree whose children were sampled
    /// from q carries q in <see cref="DraftTree.DraftLogits"/>.
    /// </summary>
    DraftTree[] Propose(IReadOnlyList<ISampleView> samples, Strategy strategy, IReadOnlyList<int> depths);

    /// <summary>Called after verification: the sample kept <paramref name="acceptedNodes"/> of its draft.</summary>
    void Accepted(ISampleView sample, DraftTree draft, ReadOnlySpan<int> acceptedNodes);

    void Release(ISampleView sample);

    /// <summary>
    /// The sample moved to another instance: forget its per-sample state here (the target admits it afresh from its
    /// tokens). By default the same as <see cref="Release"/>.
    /// </summary>
    void MigratedOut(ISampleView sample) => Release(sample);
}
