using System.Runtime.InteropServices;
using System.Diagnostics;
using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// The draft-model proposer: its own model and KV cache, kept in step with the sample incrementally — each step it
/// first feeds the tokens committed since its last step (the catch-up), then drafts; after verification it keeps in
/// its cache exactly the accepted drafted tokens it had fed (the roll-back), so the next catch-up feeds only what
/// is missing.
/// <list type="bullet">
/// <item>Chains (<c>chain:K</c>): K tokens sampled from q (the sample kernel on the draft stream, so draft
/// randomness never touches the verifier's), one forward per token; verified as <see cref="DraftKind.Sampled"/>.</item>
/// <item>Dynamic trees (<c>tree:DEPTH,TOPK,BUDGET</c>, EAGLE-2): top-k expansion by path probability under the
/// token budget (<see cref="DraftTreeBuilder"/>), one forward and one <see cref="ComputeBackend.TopTokens"/> per depth; verified as <see cref="DraftKind.Deterministic"/>.
/// A model takes tentative tokens over several forwards only as a chain, so each depth drops the previous depth's
/// tentative tokens and feeds the expanded part of the tree again in one forward (at most BUDGET tokens of a
/// small model); what stays tentative after drafting is the last depth's feed.</item>
/// </list>
/// With a cost observer (the selector's cost model), every draft forward's measured time refines its draft curve.
/// </summary>
public sealed class DraftModelProposer(ITargetModel draft, IDraftCostObserver? cost = null) : IProposer, IDisposable
{
    private DeviceBuffer<float>? _logits;

    /// <summary>
    /// Trees rank each frontier row on the host after reading it back whole (the path before the top-tokens kernel),
    /// instead of with the kernel. For tests that compare the two: on the CPU backend they draft identical trees.
    /// </summary>
    internal bool RanksOnHost { get; init; }

    /// <summary>Per sample drafting a tree this step: the tentative index in the draft cache of each tree node (−1: not fed).</summary>
    private readonly Dictionary<long, int[]> _treeFeeds = new();

    public ProposerKind Kind => ProposerKind.DraftModel;

    public ITargetModel Model => draft;

    public void Admit(ISampleView sample) { }

    public void Append(ISampleView sample, ReadOnlySpan<int> tokens) { }

    public DraftTree[] Propose(IReadOnlyList<ISampleView> samples, Strategy strategy, IReadOnlyList<int> depths)
    {
        int vocab = draft.VocabSize, n = samples.Count;
        bool tree = strategy.Shape == DraftShape.Tree;
        var trees = new DraftTree[n];
        var depth = depths.ToArray();
        for (int i = 0; i < n; i++)
        {
            trees[i] = new DraftTree(tree ? DraftKind.Deterministic : DraftKind.Sampled);
            _treeFeeds.Remove(samples[i].SampleId);
        }

        // Catch-up: feed every committed token the draft has not seen (at least the pending one).
        var active = new List<int>();
        for (int i = 0; i < n; i++)
        {
            if (depth[i] == 0) continue;
            int seen = draft.CommittedLength(samples[i].SampleId);
            int catchUp = samples[i].Tokens.Length - seen;
            // Room for the catch-up now; the drafted tokens reserve after it is committed (its commit and rollback end the reservation).
            if (catchUp < 1 || !draft.TryReserve(samples[i].SampleId, catchUp)) { depth[i] = 0; continue; }
            active.Add(i);
        }
        if (active.Count == 0) return trees;
        var offsets = new List<int> { 0 };
        var tokens = new List<int>();
        var parents = new List<int>();
        var rows = new List<int>();
        foreach (int i in active)
        {
            var s = samples[i];
            int seen = draft.CommittedLength(s.SampleId);
            for (int t = seen; t < s.Tokens.Length; t++)
            {
                tokens.Add(s.Tokens[t]);
                parents.Add(t == seen ? -1 : t - seen - 1);
            }
            offsets.Add(tokens.Count);
            rows.Add(tokens.Count - 1);
        }
        var root = Forward(active.Select(i => samples[i].SampleId).ToArray(), offsets, tokens, parents, rows, vocab);
        foreach (int i in active)
        {
            var s = samples[i];
            int caughtUp = s.Tokens.Length - draft.CommittedLength(s.SampleId);
            Keep(s.SampleId, Enumerable.Range(0, caughtUp).ToArray());
        }
        if (tree) DraftTrees(samples, strategy, depth, active, root, trees);
        else DraftChains(samples, depth, active, trees);
        return trees;
    }

    /// <summary>Chains: sample x_j from q at depth j, feed it while more follow; row k of the root logits belongs to active[k].</summary>
    private void DraftChains(IReadOnlyList<ISampleView> samples, int[] depth, List<int> active, DraftTree[] trees)
    {
        int vocab = draft.VocabSize;
        // q stays on the device: each depth's rows are copied into the samples' q rows, where verification uses them
        // (not at temperature 0, where it never reads q).
        var qFirst = new Dictionary<int, int>();
        int qRows = 0;
        foreach (int i in active)
        {
            var s = samples[i];
            if (!s.Sampling.IsGreedy) { qFirst[i] = qRows; qRows += depth[i]; }
            // Out of draft KV: draft a single token (it needs no feeding).
            if (depth[i] > 1 && !draft.TryReserve(s.SampleId, depth[i] - 1)) depth[i] = 1;
        }
        var q = qRows == 0 ? null : Grow(ref _q, (long)qRows * vocab, "draft q");
        var copyFrom = new List<int>();
        var copyTo = new List<int>();

        // Draft depth by depth: sample x_j from the current q row of every sample still drafting, feed it if more follow.
        var current = active.ToDictionary(i => i, i => active.IndexOf(i)); // sample → its row in the last logits
        for (int j = 1; current.Count > 0; j++)
        {
            var drafting = current.Keys.ToArray();
            var settings = DraftSettings(samples, drafting, j);
            // The sample kernel reads rows in order; gather this depth's rows from the last forward's logits.
            var logitRows = Gather(drafting.Select(i => current[i]).ToArray(), vocab);
            var drawn = new int[drafting.Length];
            var logProbs = new float[drafting.Length];
            draft.Backend.Sample(settings, logitRows, vocab, drawn, logProbs);
            copyFrom.Clear();
            copyTo.Clear();
            var next = new Dictionary<int, int>();
            var feedIds = new List<long>();
            var feedOffsets = new List<int> { 0 };
            var feedTokens = new List<int>();
            var feedParents = new List<int>();
            var feedRows = new List<int>();
            for (int r = 0; r < drafting.Length; r++)
            {
                int i = drafting[r];
                // Row j − 1 of the tree's q: the distribution node j − 1's children (x_j) were drawn from.
                if (qFirst.TryGetValue(i, out int first)) { copyFrom.Add(r); copyTo.Add(first + j - 1); }
                trees[i].Add(j == 1 ? -1 : j - 2, drawn[r], MathF.Exp(logProbs[r]));
                if (j < depth[i])
                {
                    next[i] = feedIds.Count;
                    feedIds.Add(samples[i].SampleId);
                    feedTokens.Add(drawn[r]);
                    feedParents.Add(j == 1 ? -1 : j - 2);
                    feedOffsets.Add(feedTokens.Count);
                    feedRows.Add(feedTokens.Count - 1);
                }
            }
            if (q is not null) draft.Backend.CopyRows(logitRows, q, CollectionsMarshal.AsSpan(copyFrom), CollectionsMarshal.AsSpan(copyTo), vocab);
            if (next.Count == 0) break;
            Forward(feedIds.ToArray(), feedOffsets, feedTokens, feedParents, feedRows, vocab);
            current = next;
        }
        foreach (var (i, first) in qFirst) trees[i].DraftLogits = new DraftLogitRows(draft.Backend, q!, first, trees[i].Count);
    }

    /// <summary>The sample kernel's settings for drawing x_<paramref name="j"/> of each drafting sample, on the draft stream.</summary>
    private static SamplingParams[] DraftSettings(IReadOnlyList<ISampleView> samples, int[] drafting, int j) => drafting.Select(i =>
    {
        // Keyed by the sample as the verifier is: samples sharing a request's settings must not share draws,
        // or each would see the same draft and the batch's outputs would be correlated.
        var p = samples[i].Sampling;
        p.SampleId = (uint)samples[i].SampleId;
        p.Stream = RngStreams.Draft;
        p.Position = samples[i].Tokens.Length + j - 1;
        return p;
    }).ToArray();

    /// <summary>
    /// Dynamic trees: the root's children from the catch-up logits (row k for active[k]), then per depth one forward
    /// over every growing sample's expanded nodes so far — the previous depth's feed dropped first — whose frontier
    /// rows give the next children — each depth's rows ranked in one top-tokens kernel call on the draft's backend, so
    /// only TOPK (token, probability) pairs per row leave the device. Afterwards the draft cache holds the last feed as tentative tokens, and
    /// <see cref="_treeFeeds"/> maps the tree's nodes to them for <see cref="Accepted"/>.
    /// </summary>
    private void DraftTrees(IReadOnlyList<ISampleView> samples, Strategy strategy, int[] depth, List<int> active, DeviceBuffer<float> root, DraftTree[] trees)
    {
        int vocab = draft.VocabSize;
        var builders = new Dictionary<int, DraftTreeBuilder>();
        var feeds = new Dictionary<int, int[]>(); // sample → candidates of its last feed, in feeding order
        var expansions = new List<(DraftTreeBuilder Builder, int Candidate)>();
        for (int k = 0; k < active.Count; k++)
        {
            int i = active[k];
            var b = builders[i] = new DraftTreeBuilder(strategy.TopK, strategy.Budget, Math.Min(depth[i], strategy.Depth), samples[i].Sampling);
            expansions.Add((b, -1));
        }
        Expand(root, expansions, strategy.TopK);
        for (int d = 1; ; d++)
        {
            var ids = new List<long>();
            var offsets = new List<int> { 0 };
            var tokens = new List<int>();
            var parents = new List<int>();
            var rows = new List<int>();
            expansions.Clear(); // in the order of the forward's logit rows
            foreach (int i in active)
            {
                var b = builders[i];
                var frontier = b.Frontier(d);
                if (frontier.Length == 0) continue;
                var id = samples[i].SampleId;
                // The expanded nodes (ancestor-closed) and the frontier: the part of the tree whose logits were or are needed.
                var fed = Enumerable.Range(0, b.Count).Where(c => b.IsExpanded(c) || frontier.Contains(c)).ToArray();
                if (feeds.Remove(i)) draft.Rollback(id);
                if (!draft.TryReserve(id, fed.Length)) continue; // out of draft KV: the tree stays as it is
                var index = new Dictionary<int, int>();
                int first = tokens.Count;
                foreach (int c in fed)
                {
                    index[c] = tokens.Count - first;
                    tokens.Add(b.Token(c));
                    parents.Add(b.Parent(c) < 0 ? -1 : index[b.Parent(c)]);
                }
                foreach (int c in frontier) rows.Add(first + index[c]);
                ids.Add(id);
                offsets.Add(tokens.Count);
                feeds[i] = fed;
                foreach (int c in frontier) expansions.Add((b, c));
            }
            if (ids.Count == 0) break;
            Expand(Forward(ids.ToArray(), offsets, tokens, parents, rows, vocab), expansions, strategy.TopK);
        }
        foreach (int i in active)
        {
            trees[i] = builders[i].Build(out var candidateOfNode);
            var fed = feeds.TryGetValue(i, out var f) ? f : [];
            var tentative = new int[candidateOfNode.Length];
            for (int node = 0; node < tentative.Length; node++) tentative[node] = Array.IndexOf(fed, candidateOfNode[node]);
            _treeFeeds[samples[i].SampleId] = tentative;
        }
    }

    /// <summary>
    /// Expands candidate <c>expansions[r].Candidate</c> of each builder with the top tokens of row r of
    /// <paramref name="logits"/>: one top-tokens kernel call for all the rows, so only <paramref name="topK"/> (token,
    /// probability) pairs per row come back to the host, never a vocabulary-sized row (unless <see cref="RanksOnHost"/>).
    /// </summary>
    private void Expand(DeviceBuffer<float> logits, List<(DraftTreeBuilder Builder, int Candidate)> expansions, int topK)
    {
        int n = expansions.Count, vocab = draft.VocabSize;
        if (RanksOnHost)
        {
            var row = new float[vocab];
            for (int r = 0; r < n; r++)
            {
                logits.Read(row, (long)r * vocab);
                expansions[r].Builder.Expand(expansions[r].Candidate, row);
            }
            return;
        }
        var settings = expansions.Select(e => e.Builder.Sampling).ToArray();
        var tokens = new int[n * topK];
        var probabilities = new double[n * topK];
        draft.Backend.TopTokens(settings, logits, Enumerable.Range(0, n).ToArray(), vocab, topK, tokens, probabilities);
        var children = new (int Token, double Probability)[topK];
        for (int r = 0; r < n; r++)
        {
            int listed = 0;
            while (listed < topK && tokens[r * topK + listed] >= 0)
            {
                children[listed] = (tokens[r * topK + listed], probabilities[r * topK + listed]);
                listed++;
            }
            expansions[r].Builder.Expand(expansions[r].Candidate, children.AsSpan(0, listed));
        }
    }

    private DeviceBuffer<float> Forward(long[] ids, List<int> offsets, List<int> tokens, List<int> parents, List<int> rows, int vocab)
    {
        var logits = Buffer((long)rows.Count * vocab);
        var batch = new ForwardBatch { SampleIds = ids, TokenOffsets = offsets.ToArray(), Tokens = tokens.ToArray(), Parents = parents.ToArray(), LogitRows = rows.ToArray() };
        long start = Stopwatch.GetTimestamp();
        draft.Forward(batch, logits);
        cost?.ObserveDraftForward(tokens.Count, Stopwatch.GetElapsedTime(start).TotalSeconds);
        return logits;
    }

    /// <summary>The last forward's rows <paramref name="rowsOfLast"/> in order 0..k−1, gathered on the device when they are not already.</summary>
    private DeviceBuffer<float> Gather(int[] rowsOfLast, int vocab)
    {
        bool inOrder = rowsOfLast.Select((r, k) => r == k).All(b => b);
        if (inOrder) return _logits!;
        var gathered = Grow(ref _gathered, (long)rowsOfLast.Length * vocab, "draft logits (gathered)");
        draft.Backend.CopyRows(_logits!, gathered, rowsOfLast, Enumerable.Range(0, rowsOfLast.Length).ToArray(), vocab);
        return gathered;
    }

    private DeviceBuffer<float>? _gathered, _q;

    private DeviceBuffer<float> Buffer(long length) => Grow(ref _logits, length, "draft logits");

    /// <summary>A buffer of the draft's backend kept across steps, grown (never shrunk) to <paramref name="length"/>.</summary>
    private DeviceBuffer<float> Grow(ref DeviceBuffer<float>? buffer, long length, string name) => draft.Backend.Reuse(ref buffer, length, name);

    public void Accepted(ISampleView sample, DraftTree tree, ReadOnlySpan<int> acceptedNodes)
    {
        if (_treeFeeds.Remove(sample.SampleId, out var tentative))
        {
            // A tree: the fed nodes are ancestor-closed, so the fed part of the accepted path is a prefix of it.
            var keep = new List<int>();
            foreach (int node in acceptedNodes)
            {
                if (tentative[node] < 0) break;
                keep.Add(tentative[node]);
            }
            Keep(sample.SampleId, keep.ToArray());
            return;
        }
        // A chain: the drafted tokens fed to the draft model are all but the last node; keep the accepted ones among them.
        int fed = Math.Max(0, tree.Count - 1);
        int kept = Math.Min(acceptedNodes.Length, fed);
        Keep(sample.SampleId, Enumerable.Range(0, kept).ToArray());
    }

    /// <summary>Commits the tentative tokens <paramref name="keep"/> of the draft cache and rolls back the rest (none, after a catch-up).</summary>
    private void Keep(long sampleId, int[] keep)
    {
        draft.Commit(sampleId, keep);
        draft.Rollback(sampleId);
    }

    public void Release(ISampleView sample)
    {
        _treeFeeds.Remove(sample.SampleId);
        draft.Release(sample.SampleId);
    }

    public void Dispose()
    {
        _logits?.Dispose();
        _gathered?.Dispose();
        _q?.Dispose();
    }
}
