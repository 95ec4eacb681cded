using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// One sample's dynamic draft tree (EAGLE-2), grown level by level from the draft model's logits. Every candidate
/// node carries its score, the draft probability of its whole path (the product of q along it). Expansion: at each
/// depth the <c>topK</c> best-scoring candidates of the previous depth get their <c>topK</c> most probable tokens
/// under the warped draft distribution as children — but only candidates that still rank within the token budget,
/// because a descendant never scores above its ancestor and so could never enter the final tree otherwise.
/// Re-ranking: the final tree is the <c>budget</c> best-scoring candidates (ties: shallower first, then earlier),
/// which always includes every selected node's ancestors. Children are chosen deterministically, so the tree is
/// verified as <see cref="DraftKind.Deterministic"/> (sampling from p restricted to the untried children): lossless
/// at any temperature, whatever the draft model proposes.
/// </summary>
internal sealed class DraftTreeBuilder
{
    private readonly record struct Candidate(int Parent, int Token, float Probability, double Score, int Depth);

    private readonly List<Candidate> _candidates = new();
    private readonly List<bool> _expanded = new();
    private readonly int _topK, _budget, _maxDepth;
    private readonly SamplingParams _sampling;
    private bool _rootExpanded;

    /// <param name="topK">Children per expanded node, and nodes expanded per depth.</param>
    /// <param name="budget">Most nodes in the final tree.</param>
    /// <param name="maxDepth">Deepest node (1 = children of the root only).</param>
    /// <param name="sampling">The sample's settings: the draft distribution is warped as the verifier warps p (temperature 0: softmax of the raw logits).</param>
    public DraftTreeBuilder(int topK, int budget, int maxDepth, in SamplingParams sampling)
    {
        if (topK < 1) throw new ArgumentOutOfRangeException(nameof(topK), topK, "must be >= 1");
        if (budget < 1) throw new ArgumentOutOfRangeException(nameof(budget), budget, "must be >= 1");
        if (maxDepth < 1) throw new ArgumentOutOfRangeException(nameof(maxDepth), maxDepth, "must be >= 1");
        _topK = topK;
        _budget = budget;
        _maxDepth = maxDepth;
        _sampling = sampling;
    }

    /// <summary>The sample's settings, under which the draft distribution is warped.</summary>
    public SamplingParams Sampling => _sampling;

    /// <summary>Candidates generated so far (indices are in creation order, so parents precede children).</summary>
    public int Count => _candidates.Count;

    public int Token(int candidate) => _candidates[candidate].Token;

    /// <summary>Parent candidate, −1 for children of the root.</summary>
    public int Parent(int candidate) => _candidates[candidate].Parent;

    public int Depth(int candidate) => _candidates[candidate].Depth;

    /// <summary>Draft probability of the whole path from the root to <paramref name="candidate"/>.</summary>
    public double Score(int candidate) => _candidates[candidate].Score;

    /// <summary>Whether <see cref="Expand"/> has run on the candidate (its logits were computed).</summary>
    public bool IsExpanded(int candidate) => _expanded[candidate];

    /// <summary>
    /// Adds the children of <paramref name="parent"/> (−1 = root): its <c>topK</c> most probable tokens (lowest
    /// token on ties, probability > 0) under the warped distribution of <paramref name="logits"/> // [vocab].
    /// </summary>
    public void Expand(int parent, ReadOnlySpan<float> logits) => Expand(parent, TopTokens(logits, _sampling, _topK).ToArray());

    /// <summary>
    /// Adds the children of <paramref name="parent"/> (−1 = root) given as its ranked top tokens under the warped
    /// draft distribution — the top-tokens kernel's answer for its logits row: at most <c>topK</c>, most probable
    /// first, each of probability > 0.
    /// </summary>
    public void Expand(int parent, ReadOnlySpan<(int Token, double Probability)> children)
    {
        if (parent < -1 || parent >= Count) throw new ArgumentOutOfRangeException(nameof(parent), parent, $"must be -1 or a candidate (< {Count})");
        if (parent < 0 ? _rootExpanded : _expanded[parent]) throw new InvalidOperationException($"candidate {parent} is already expanded");
        if (children.Length > _topK) throw new ArgumentException($"{children.Length} children, more than topK {_topK}", nameof(children));
        int depth = parent < 0 ? 1 : _candidates[parent].Depth + 1;
        if (depth > _maxDepth) throw new InvalidOperationException($"candidate {parent}: its children would be at depth {depth} > {_maxDepth}");
        double score = parent < 0 ? 1 : _candidates[parent].Score;
        if (parent < 0) _rootExpanded = true; else _expanded[parent] = true;
        foreach (var (token, probability) in children)
        {
            _candidates.Add(new Candidate(parent, token, (float)probability, score * probability, depth));
            _expanded.Add(false);
        }
    }

    /// <summary>
    /// The candidates of <paramref name="depth"/> to expand next, best first: the <c>topK</c> best-scoring ones among
    /// those ranking within the budget (empty when their children would exceed the maximal depth).
    /// </summary>
    public int[] Frontier(int depth)
    {
        if (depth >= _maxDepth) return [];
        return Ranked().Take(_budget).Where(c => _candidates[c].Depth == depth && !_expanded[c]).Take(_topK).ToArray();
    }

    /// <summary>
    /// The final tree: the <c>budget</c> best-scoring candidates in creation order (parents before children, siblings
    /// distinct). <paramref name="candidateOfNode"/> maps each tree node back to its candidate.
    /// </summary>
    public DraftTree Build(out int[] candidateOfNode)
    {
        candidateOfNode = Ranked().Take(_budget).Order().ToArray();
        var nodeOfCandidate = new Dictionary<int, int>();
        var tree = new DraftTree(DraftKind.Deterministic);
        foreach (int c in candidateOfNode)
        {
            var x = _candidates[c];
            int parent = x.Parent < 0 ? -1 : nodeOfCandidate.TryGetValue(x.Parent, out int p) ? p
                : throw new InvalidOperationException($"candidate {c} is selected without its parent {x.Parent}");
            nodeOfCandidate[c] = tree.Add(parent, x.Token, x.Probability);
        }
        return tree;
    }

    /// <summary>Candidates by score, best first; ties: shallower first, then earlier (so ancestors precede descendants).</summary>
    private IEnumerable<int> Ranked() =>
        Enumerable.Range(0, Count).OrderByDescending(c => _candidates[c].Score).ThenBy(c => _candidates[c].Depth).ThenBy(c => c);

    /// <summary>
    /// The <paramref name="count"/> most probable tokens of the warped distribution of <paramref name="logits"/>, with
    /// their probabilities (see <see cref="ReferenceTopTokens.TopTokens"/>, the host path of the top-tokens kernel).
    /// </summary>
    public static List<(int Token, double Probability)> TopTokens(ReadOnlySpan<float> logits, in SamplingParams sampling, int count) =>
        ReferenceTopTokens.TopTokens(logits, sampling, count);
}
