namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// A suffix tree (uncompressed, depth-limited: a suffix trie of every substring up to <see cref="MaxDepth"/>
/// tokens) over a set of token sequences that grow one token at a time: a prompt, the responses of its sibling
/// samples and earlier iterations' responses. Each node counts the occurrences of its substring, so the children
/// of the node matching a context give the empirical distribution of what followed that context. Appending a
/// token costs O(<see cref="MaxDepth"/>): each sequence keeps the nodes of its current suffixes.
/// </summary>
public sealed class SuffixIndex
{
    private const int Root = 0;

    // Node storage, struct-of-arrays: occurrence count, depth, token on the edge from the parent, first child and
    // next sibling (for enumerating children), plus a hash map (node, token) → child for lookups.
    private int[] _count = new int[1024];
    private int[] _depth = new int[1024];
    private int[] _token = new int[1024];
    private int[] _firstChild = new int[1024];
    private int[] _nextSibling = new int[1024];
    private readonly Dictionary<long, int> _children = new();
    private readonly List<List<int>> _suffixNodes = new();

    public SuffixIndex(int maxDepth = 24)
    {
        if (maxDepth < 2) throw new ArgumentOutOfRangeException(nameof(maxDepth), $"maxDepth {maxDepth}: must be >= 2");
        MaxDepth = maxDepth;
        NodeCount = 1;
        _firstChild[Root] = -1;
        _nextSibling[Root] = -1;
    }

    /// <summary>Longest substring indexed.</summary>
    public int MaxDepth { get; }

    public int NodeCount { get; private set; }

    public int SequenceCount => _suffixNodes.Count;

    /// <summary>Starts a new sequence (e.g. a sample: its prompt, then its response as it grows) and returns its handle.</summary>
    public int BeginSequence(ReadOnlySpan<int> prefix = default)
    {
        _suffixNodes.Add(new List<int> { Root });
        int handle = _suffixNodes.Count - 1;
        Append(handle, prefix);
        return handle;
    }

    public void Append(int sequence, ReadOnlySpan<int> tokens)
    {
        foreach (int t in tokens) Append(sequence, t);
    }

    /// <summary>Extends <paramref name="sequence"/> by <paramref name="token"/>: every suffix shorter than MaxDepth grows by one.</summary>
    public void Append(int sequence, int token)
    {
        if ((uint)sequence >= (uint)_suffixNodes.Count) throw new ArgumentOutOfRangeException(nameof(sequence), $"sequence {sequence}: no such sequence ({_suffixNodes.Count} begun)");
        if (token < 0) throw new ArgumentOutOfRangeException(nameof(token), $"token {token}: must be >= 0");
        var suffixes = _suffixNodes[sequence];
        // suffixes holds the nodes of the current suffixes, shortest (the root) first.
        int kept = 0;
        for (int i = 0; i < suffixes.Count; i++)
        {
            int node = suffixes[i];
            if (_depth[node] >= MaxDepth) continue;
            int child = ChildOrAdd(node, token);
            _count[child]++;
            suffixes[kept++] = child;
        }
        suffixes.RemoveRange(kept, suffixes.Count - kept);
        suffixes.Insert(0, Root);
    }

    /// <summary>The child of <paramref name="node"/> along <paramref name="token"/>, or −1.</summary>
    public int Child(int node, int token) => _children.TryGetValue(Key(node, token), out int child) ? child : -1;

    public int Count(int node) => _count[node];

    public int Depth(int node) => _depth[node];

    /// <summary>Children of <paramref name="node"/> as (token, child node, count).</summary>
    public IEnumerable<(int Token, int Node, int Count)> Children(int node)
    {
        for (int c = _firstChild[node]; c >= 0; c = _nextSibling[c]) yield return (_token[c], c, _count[c]);
    }

    public bool HasChildren(int node) => _firstChild[node] >= 0;

    /// <summary>
    /// The node of the longest suffix of <paramref name="context"/> (at most MaxDepth − 1 tokens, so it can still
    /// grow) that occurs in the index with a continuation, or the root (depth 0) when none does.
    /// </summary>
    public int Match(ReadOnlySpan<int> context)
    {
        int longest = Math.Min(context.Length, MaxDepth - 1);
        for (int length = longest; length >= 1; length--)
        {
            int node = Root;
            var suffix = context[^length..];
            for (int i = 0; i < suffix.Length && node >= 0; i++) node = Child(node, suffix[i]);
            if (node >= 0 && HasChildren(node)) return node;
        }
        return Root;
    }

    private static long Key(int node, int token) => ((long)node << 32) | (uint)token;

    private int ChildOrAdd(int node, int token)
    {
        long key = Key(node, token);
        if (_children.TryGetValue(key, out int child)) return child;
        if (NodeCount == _count.Length) Grow();
        child = NodeCount++;
        _count[child] = 0;
        _depth[child] = _depth[node] + 1;
        _token[child] = token;
        _firstChild[child] = -1;
        _nextSibling[child] = _firstChild[node];
        _firstChild[node] = child;
        _children.Add(key, child);
        return child;
    }

    private void Grow()
    {
        int size = _count.Length * 2;
        Array.Resize(ref _count, size);
        Array.Resize(ref _depth, size);
        Array.Resize(ref _token, size);
        Array.Resize(ref _firstChild, size);
        Array.Resize(ref _nextSibling, size);
    }
}
