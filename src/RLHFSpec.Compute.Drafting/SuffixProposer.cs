
namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// The model-free proposer: one <see cref="SuffixIndex"/> per distinct prompt, holding the prompt, every sample's
/// response to it as it grows (so siblings of a GRPO group draft from each other) and the responses of earlier
/// iterations (the proposer outlives a generate call). Drafts are deterministic chains or trees of the most
/// frequent continuations.
/// </summary>
public sealed class SuffixProposer(int maxDepth = 24) : IProposer
{
    private readonly Dictionary<PromptKey, SuffixIndex> _indexes = new();
    private readonly Dictionary<long, (SuffixIndex Index, int Sequence)> _samples = new();
    private readonly HashSet<long> _admitted = new(); // samples indexed here since the last Remember of their result

    public ProposerKind Kind => ProposerKind.Suffix;

    /// <summary>Distinct prompts indexed so far.</summary>
    public int Prompts => _indexes.Count;

    public void Admit(ISampleView sample)
    {
        if (_samples.ContainsKey(sample.SampleId)) return; // re-admitted after preemption: its sequence is intact
        var key = new PromptKey(sample.Prompt.ToArray());
        if (!_indexes.TryGetValue(key, out var index)) _indexes[key] = index = new SuffixIndex(maxDepth);
        int sequence = index.BeginSequence(sample.Tokens.ToArray());
        _samples[sample.SampleId] = (index, sequence);
        _admitted.Add(sample.SampleId);
    }

    /// <summary>
    /// Indexes a response generated elsewhere (another instance of a cluster) so later drafts for the same prompt can
    /// use it; a sample this proposer admitted itself is skipped (it is indexed already, up to where it moved away).
    /// </summary>
    public void Remember(long sampleId, int[] prompt, ReadOnlySpan<int> response)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (_admitted.Remove(sampleId)) return;
        var key = new PromptKey(prompt);
        if (!_indexes.TryGetValue(key, out var index)) _indexes[key] = index = new SuffixIndex(maxDepth);
        index.BeginSequence([.. prompt, .. response]);
    }

    public void Append(ISampleView sample, ReadOnlySpan<int> tokens)
    {
        if (_samples.TryGetValue(sample.SampleId, out var s)) s.Index.Append(s.Sequence, tokens);
    }

    public DraftTree[] Propose(IReadOnlyList<ISampleView> samples, Strategy strategy, IReadOnlyList<int> depths)
    {
        var trees = new DraftTree[samples.Count];
        for (int i = 0; i < samples.Count; i++)
        {
            if (depths[i] == 0 || !_samples.TryGetValue(samples[i].SampleId, out var s))
            {
                trees[i] = new DraftTree(Engine.Kernels.DraftKind.Deterministic);
                continue;
            }
            var context = samples[i].Tokens;
            trees[i] = strategy.Shape == DraftShape.Tree
                ? SuffixDrafts.Tree(s.Index, context, depths[i], strategy.TopK, strategy.Budget)
                : SuffixDrafts.Chain(s.Index, context, depths[i]);
        }
        return trees;
    }

    public void Accepted(ISampleView sample, DraftTree draft, ReadOnlySpan<int> acceptedNodes) { }

    /// <summary>A finished sample's response stays indexed for its siblings and later iterations.</summary>
    public void Release(ISampleView sample)
    {
        if (sample.IsFinished) _samples.Remove(sample.SampleId);
    }

    /// <summary>A sample that moved away: its response so far stays indexed for its siblings here, but it no longer grows.</summary>
    public void MigratedOut(ISampleView sample) => _samples.Remove(sample.SampleId);
}
