using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// Model-free drafts from a <see cref="SuffixIndex"/>: the continuations that most often followed the longest
/// matching suffix of the context, as a chain or a tree expanded best-first by cumulative empirical probability
/// under a node budget. Drafts are deterministic (<see cref="DraftKind.Deterministic"/>: verification treats q
/// as one-hot), so the empirical probabilities only serve the acceptance estimator. Ties go to the lower token id,
/// so a draft is a pure function of the index and the context.
/// </summary>
public static class SuffixDrafts
{
    /// <summary>The most frequent continuation, up to <paramref name="maxTokens"/> tokens.</summary>
    public static DraftTree Chain(SuffixIndex index, ReadOnlySpan<int> context, int maxTokens, float minProbability = 0f) =>
        Tree(index, context, maxTokens, topK: 1, budget: maxTokens, minProbability);

    /// <summary>
    /// A tree of at most <paramref name="budget"/> nodes and depth <paramref name="maxDepth"/>, at most
    /// <paramref name="topK"/> children per node, expanded in order of cumulative probability (the product of the
    /// empirical probabilities along the path); nodes below <paramref name="minProbability"/> are not added.
    /// </summary>
    public static DraftTree Tree(SuffixIndex index, ReadOnlySpan<int> context, int maxDepth, int topK, int budget, float minProbability = 0f)
    {
        if (maxDepth < 0) throw new ArgumentOutOfRangeException(nameof(maxDepth), $"maxDepth {maxDepth}: must be >= 0");
        if (topK < 1) throw new ArgumentOutOfRangeException(nameof(topK), $"topK {topK}: must be >= 1");
        if (budget < 0) throw new ArgumentOutOfRangeException(nameof(budget), $"budget {budget}: must be >= 0");
        var tree = new DraftTree(DraftKind.Deterministic);
        if (maxDepth == 0 || budget == 0 || context.Length == 0) return tree;

        var contextArray = context.ToArray();
        // Frontier of candidate nodes: highest cumulative probability first; ties: earlier-created first.
        var frontier = new PriorityQueue<Candidate, (float, long)>();
        long order = 0;
        int start = index.Match(context);
        if (index.Depth(start) == 0) return tree;
        Push(index, frontier, ref order, parent: -1, node: start, cumulative: 1f, topK, minProbability);
        while (tree.Count < budget && frontier.TryDequeue(out var c, out _))
        {
            int added = tree.Add(c.Parent, c.Token, c.Probability);
            if (tree.Depths[added] >= maxDepth) continue;
            int node = c.Node;
            if (!index.HasChildren(node))
            {
                // Depth limit of the index reached: match again on the context extended by the path.
                int[] extended = [.. contextArray, .. tree.PathTo(added)];
                node = index.Match(extended);
                if (index.Depth(node) == 0) continue;
            }
            Push(index, frontier, ref order, added, node, c.Cumulative, topK, minProbability);
        }
        return tree;
    }

    private readonly record struct Candidate(int Parent, int Token, int Node, float Probability, float Cumulative);

    private static void Push(SuffixIndex index, PriorityQueue<Candidate, (float, long)> frontier, ref long order, int parent, int node, float cumulative, int topK, float minProbability)
    {
        long total = 0;
        foreach (var child in index.Children(node)) total += child.Count;
        if (total == 0) return;
        foreach (var child in index.Children(node).OrderByDescending(c => c.Count).ThenBy(c => c.Token).Take(topK))
        {
            float p = (float)((double)child.Count / total);
            float cp = cumulative * p;
            if (cp < minProbability) continue;
            frontier.Enqueue(new Candidate(parent, child.Token, child.Node, p, cp), (-cp, order++));
        }
    }
}
