using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// One sample's proposal: draft nodes in topological order (a node's parent index is smaller than its own; −1 is
/// the root, i.e. the sample's last committed token). A chain is a tree with one child per node; an empty tree
/// means "no speculation this step". <see cref="Kind"/> tells the verifier how children were chosen
/// (sampled from q, or deterministically), which decides the lossless acceptance rule.
/// </summary>
public sealed class DraftTree
{
    private readonly List<int> _tokens = new();
    private readonly List<int> _parents = new();
    private readonly List<int> _depths = new();
    private readonly List<float> _probabilities = new();

    public DraftTree(DraftKind kind) => Kind = kind;

    public DraftKind Kind { get; }

    public int Count => _tokens.Count;

    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>Parent of each node: −1 for children of the root.</summary>
    public IReadOnlyList<int> Parents => _parents;

    /// <summary>Depth of each node: 1 for children of the root.</summary>
    public IReadOnlyList<int> Depths => _depths;

    /// <summary>
    /// The proposer's probability of each node given its parent (draft q, or an empirical frequency for model-free
    /// proposers): the acceptance estimator's prior, never used by verification.
    /// </summary>
    public IReadOnlyList<float> Probabilities => _probabilities;

    /// <summary>
    /// For <see cref="DraftKind.Sampled"/> trees: the draft logits on the drafting device, one row per node, row 0 at
    /// the root, row 1 + j at node j: the distribution each node's children were sampled from (before temperature /
    /// top-k / top-p, which verification applies identically to p and q); the last node's row, which no child was
    /// drawn from, is absent. They stay on the device. Null for deterministic drafts, and for greedy samples
    /// (temperature 0: verification accepts while the draft is p's argmax and never reads q).
    /// </summary>
    public DraftLogitRows? DraftLogits { get; set; }

    public int MaxDepth => _depths.Count == 0 ? 0 : _depths.Max();

    /// <summary>Adds a node under <paramref name="parent"/> (−1 = root) and returns its index.</summary>
    public int Add(int parent, int token, float probability)
    {
        if (parent < -1 || parent >= Count) throw new ArgumentOutOfRangeException(nameof(parent), $"parent {parent}: must be -1 or an existing node (< {Count})");
        if (token < 0) throw new ArgumentOutOfRangeException(nameof(token), $"token {token}: must be >= 0");
        _tokens.Add(token);
        _parents.Add(parent);
        _depths.Add(parent < 0 ? 1 : _depths[parent] + 1);
        _probabilities.Add(probability);
        return Count - 1;
    }

    /// <summary>Tokens from the root down to <paramref name="node"/> inclusive.</summary>
    public int[] PathTo(int node)
    {
        var path = new int[node < 0 ? 0 : _depths[node]];
        for (int v = node, i = path.Length - 1; v >= 0; v = _parents[v], i--) path[i] = _tokens[v];
        return path;
    }

    /// <summary>The child of <paramref name="parent"/> carrying <paramref name="token"/>, or −1.</summary>
    public int FindChild(int parent, int token)
    {
        for (int i = 0; i < Count; i++)
            if (_parents[i] == parent && _tokens[i] == token) return i;
        return -1;
    }
}
