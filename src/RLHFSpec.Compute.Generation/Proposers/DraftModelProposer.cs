using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;
using RLHFSpec.Compute.Generation.Selection;

namespace RLHFSpec.Compute.Generation.Proposers;

/// <summary>
/// The draft-model proposer (chains): its own model and KV cache, kept in step with the sample incrementally —
/// each step it first feeds the tokens committed since its last step (the catch-up), then drafts k tokens
/// sampled from q (the sample kernel on the draft stream, so draft randomness never touches the verifier's), and
/// after verification keeps only the accepted drafted tokens in its cache (the roll-back).
/// </summary>
public sealed class DraftModelProposer(ITargetModel draft) : IProposer, IDisposable
{
    private DeviceBuffer<float>? _logits;

    public ProposerKind Kind => ProposerKind.DraftModel;

    public ITargetModel Model => draft;

    public void Admit(SampleState sample) { }

    public void Append(SampleState sample, ReadOnlySpan<int> tokens) { }

    public DraftTree[] Propose(IReadOnlyList<SampleState> samples, Strategy strategy, IReadOnlyList<int> depths)
    {
        if (strategy.Shape == DraftShape.Tree) throw new NotSupportedException($"strategy {strategy}: the draft-model proposer drafts chains (use chain:K)");
        int vocab = draft.VocabSize, n = samples.Count;
        var trees = new DraftTree[n];
        var depth = depths.ToArray();
        for (int i = 0; i < n; i++) trees[i] = new DraftTree(DraftKind.Sampled);

        // Catch-up: feed every committed token the draft has not seen (at least the pending one).
        var active = new List<int>();
        for (int i = 0; i < n; i++)
        {
            if (depth[i] == 0) continue;
            int seen = draft.CommittedLength(samples[i].SampleId);
            int catchUp = samples[i].Tokens.Count - seen;
            // Room for the catch-up now; the drafted tokens reserve after it is committed (a commit frees reservations).
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
            for (int t = seen; t < s.Tokens.Count; t++)
            {
                tokens.Add(s.Tokens[t]);
                parents.Add(t == seen ? -1 : t - seen - 1);
            }
            offsets.Add(tokens.Count);
            rows.Add(tokens.Count - 1);
        }
        var q = Forward(active.Select(i => samples[i].SampleId).ToArray(), offsets, tokens, parents, rows, vocab);
        foreach (int i in active)
        {
            var s = samples[i];
            int caughtUp = s.Tokens.Count - draft.CommittedLength(s.SampleId);
            draft.Commit(s.SampleId, Enumerable.Range(0, caughtUp).ToArray());
            trees[i].DraftLogits = new float[(long)(1 + depth[i]) * vocab];
            // Out of draft KV: draft a single token (it needs no feeding).
            if (depth[i] > 1 && !draft.TryReserve(s.SampleId, depth[i] - 1)) depth[i] = 1;
        }

        // Draft depth by depth: sample x_j from the current q row of every sample still drafting, feed it if more follow.
        var current = active.ToDictionary(i => i, i => active.IndexOf(i)); // sample → its row in the last logits
        for (int j = 1; current.Count > 0; j++)
        {
            var drafting = current.Keys.ToArray();
            var settings = drafting.Select(i =>
            {
                var p = samples[i].Request.Sampling;
                p.Stream = RngStreams.Draft;
                p.Position = samples[i].NextPosition + j - 1;
                return p;
            }).ToArray();
            // The sample kernel reads rows in order; gather this depth's rows from the last forward's logits.
            var logitRows = Gather(drafting.Select(i => current[i]).ToArray(), vocab);
            var drawn = new int[drafting.Length];
            var logProbs = new float[drafting.Length];
            draft.Backend.Sample(settings, logitRows, vocab, drawn, logProbs);
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
                logitRows.Read(trees[i].DraftLogits.AsSpan((j - 1) * vocab, vocab), (long)r * vocab);
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
            if (next.Count == 0) break;
            Forward(feedIds.ToArray(), feedOffsets, feedTokens, feedParents, feedRows, vocab);
            current = next;
        }
        return trees;
    }

    private DeviceBuffer<float> Forward(long[] ids, List<int> offsets, List<int> tokens, List<int> parents, List<int> rows, int vocab)
    {
        var logits = Buffer((long)rows.Count * vocab);
        var batch = new ForwardBatch { SampleIds = ids, TokenOffsets = offsets.ToArray(), Tokens = tokens.ToArray(), Parents = parents.ToArray(), LogitRows = rows.ToArray() };
        draft.Forward(batch, logits);
        return logits;
    }

    private DeviceBuffer<float> Gather(int[] rowsOfLast, int vocab)
    {
        // Rows are already in order 0..k−1 when every drafting sample kept its slot; gather otherwise.
        bool inOrder = rowsOfLast.Select((r, k) => r == k).All(b => b);
        if (inOrder) return _logits!;
        var host = new float[(long)rowsOfLast.Length * vocab];
        for (int k = 0; k < rowsOfLast.Length; k++) _logits!.Read(host.AsSpan(k * vocab, vocab), (long)rowsOfLast[k] * vocab);
        var gathered = draft.Backend.Allocate<float>(host.Length, "draft logits (gathered)");
        gathered.Write(host);
        _gathered.Add(gathered);
        return gathered;
    }

    private readonly List<DeviceBuffer<float>> _gathered = new();

    private DeviceBuffer<float> Buffer(long length)
    {
        if (_logits is null || _logits.Length < length)
        {
            _logits?.Dispose();
            _logits = draft.Backend.Allocate<float>(Math.Max(length, 1), "draft logits");
        }
        foreach (var g in _gathered) g.Dispose();
        _gathered.Clear();
        return _logits;
    }

    public void Accepted(SampleState sample, DraftTree tree, ReadOnlySpan<int> acceptedNodes)
    {
        // Drafted tokens fed to the draft model: all but the last node; keep the accepted ones among them.
        int fed = Math.Max(0, tree.Count - 1);
        int keep = Math.Min(acceptedNodes.Length, fed);
        draft.Commit(sample.SampleId, Enumerable.Range(0, keep).ToArray());
    }

    public void Release(SampleState sample) => draft.Release(sample.SampleId);

    public void Dispose()
    {
        _logits?.Dispose();
        foreach (var g in _gathered) g.Dispose();
    }
}
