using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Tests.Statistics;

namespace RLHFSpec.Compute.Tests.Generation;

/// <summary>
/// A test double of <see cref="ITargetModel"/>: logits from a <see cref="SyntheticModel"/> of the sequence a
/// token sees (committed tokens, then its tentative ancestors), a token-slot budget standing in for KV blocks,
/// and strict checks of the contract (parents before children, kept tokens forming a path, rejected tokens rolled
/// back before the sample is reserved, fed or committed again, reservations covering
/// every fed token), so the generation loop's bookkeeping is tested, not just its output.
/// </summary>
public sealed class SyntheticTargetModel(ComputeBackend backend, SyntheticModel model, int maxContext = 4096, long slotBudget = long.MaxValue) : ITargetModel, IMigratableModel
{
    private sealed class Sample
    {
        public List<int> Committed = new();
        public List<(int Token, int Parent)> Tentative = new();
        public long Reserved; // slots held beyond the committed ones
        public bool Rejected; // the last commit left tokens out: only a rollback (or release) may follow
    }

    private readonly Dictionary<long, Sample> _samples = new();

    public int VocabSize => model.Vocab;
    public ComputeBackend Backend => backend;
    public int MaxContext => maxContext;
    public long SlotsInUse => _samples.Values.Sum(s => s.Committed.Count + s.Reserved);
    public long Forwards { get; private set; }
    public long TokensFed { get; private set; }
    public int Samples => _samples.Count;
    public long SlotBudget => slotBudget;

    /// <summary>Samples copied into other models (migrations out of this one).</summary>
    public long CopiesOut { get; private set; }

    public int CommittedLength(long sampleId) => _samples.TryGetValue(sampleId, out var s) ? s.Committed.Count : 0;

    public bool TryReserve(long sampleId, int newTokens)
    {
        if (!_samples.TryGetValue(sampleId, out var s)) _samples[sampleId] = s = new Sample();
        if (s.Rejected) throw new InvalidOperationException($"sample {sampleId}: reserved before its rejected tokens were rolled back");
        long need = s.Tentative.Count + newTokens - s.Reserved;
        if (need <= 0) return true;
        if (SlotsInUse + need > slotBudget) return false;
        s.Reserved += need;
        return true;
    }

    public void Forward(in ForwardBatch batch, DeviceBuffer<float> logits)
    {
        Forwards++;
        var rows = new Dictionary<int, List<int>>(); // a token's logits may be asked for in several rows
        for (int r = 0; r < batch.LogitRows.Length; r++)
        {
            if (!rows.TryGetValue(batch.LogitRows[r], out var list)) rows[batch.LogitRows[r]] = list = new List<int>();
            list.Add(r);
        }
        var host = new float[batch.LogitRows.Length * VocabSize];
        for (int b = 0; b < batch.NumSamples; b++)
        {
            var s = _samples.TryGetValue(batch.SampleIds[b], out var found) ? found : throw new InvalidOperationException($"sample {batch.SampleIds[b]} fed without a reservation");
            if (s.Rejected) throw new InvalidOperationException($"sample {batch.SampleIds[b]}: fed before its rejected tokens were rolled back");
            for (int t = batch.TokenOffsets[b]; t < batch.TokenOffsets[b + 1]; t++)
            {
                int parent = batch.Parents[t];
                if (parent < -1 || parent >= s.Tentative.Count) throw new InvalidOperationException($"token {t}: parent {parent} is not an earlier tentative token");
                s.Tentative.Add((batch.Tokens[t], parent));
                if (s.Tentative.Count > s.Reserved) throw new InvalidOperationException($"sample {batch.SampleIds[b]}: fed beyond its reservation");
                if (s.Committed.Count + Depth(s, s.Tentative.Count - 1) > maxContext) throw new InvalidOperationException("beyond the context limit");
                TokensFed++;
                if (rows.TryGetValue(t, out var wanted))
                    foreach (int row in wanted) model.Logits(Sequence(s, s.Tentative.Count - 1), host.AsSpan(row * VocabSize, VocabSize));
            }
        }
        logits.Write(host);
    }

    private static int Depth(Sample s, int node)
    {
        int d = 0;
        for (int v = node; v >= 0; v = s.Tentative[v].Parent) d++;
        return d;
    }

    private static int[] Sequence(Sample s, int node)
    {
        var path = new List<int>();
        for (int v = node; v >= 0; v = s.Tentative[v].Parent) path.Add(s.Tentative[v].Token);
        path.Reverse();
        return [.. s.Committed, .. path];
    }

    /// <summary>Keeps a path of the tentative tokens; the others (and unused reservations) wait for <see cref="Rollback"/>.</summary>
    public void Commit(long sampleId, ReadOnlySpan<int> keep)
    {
        var s = _samples[sampleId];
        if (s.Rejected) throw new InvalidOperationException($"sample {sampleId}: committed again before its rejected tokens were rolled back");
        int previous = -1;
        foreach (int k in keep)
        {
            if (k < 0 || k >= s.Tentative.Count) throw new InvalidOperationException($"commit of tentative token {k} of {s.Tentative.Count}");
            if (s.Tentative[k].Parent != previous) throw new InvalidOperationException($"committed tokens do not form a path: {k}'s parent is {s.Tentative[k].Parent}, not {previous}");
            s.Committed.Add(s.Tentative[k].Token);
            previous = k;
        }
        s.Tentative.Clear();
        s.Reserved -= keep.Length;
        s.Rejected = s.Reserved > 0;
    }

    /// <summary>Drops the tokens the last commit left out, or every tentative token and reservation.</summary>
    public void Rollback(long sampleId)
    {
        var s = _samples.TryGetValue(sampleId, out var found) ? found : throw new InvalidOperationException($"sample {sampleId}: nothing to roll back");
        s.Tentative.Clear();
        s.Reserved = 0;
        s.Rejected = false;
    }


    public void Release(long sampleId) => _samples.Remove(sampleId);

    /// <summary>4 bytes per committed token: a stand-in size, so copies have a cost the cluster can count.</summary>
    public long KvBytes(long sampleId) => _samples.TryGetValue(sampleId, out var s) ? 4L * s.Committed.Count : 0;

    /// <summary>Copies the committed tokens (this double's KV) into another synthetic model; strict about pending tokens.</summary>
    public bool TryCopySampleTo(long sampleId, ITargetModel target, long targetId)
    {
        if (target is not SyntheticTargetModel other) return false;
        var s = _samples.TryGetValue(sampleId, out var found) ? found : throw new InvalidOperationException($"sample {sampleId} is not in the model");
        if (s.Tentative.Count != 0 || s.Reserved != 0) throw new InvalidOperationException($"sample {sampleId}: copy with uncommitted tokens or reservations");
        if (other._samples.ContainsKey(targetId)) throw new InvalidOperationException($"sample {targetId} is already in the target");
        if (other.SlotsInUse + s.Committed.Count > other.SlotBudget) return false;
        other._samples[targetId] = new Sample { Committed = new List<int>(s.Committed) };
        CopiesOut++;
        return true;
    }

    /// <summary>The committed tokens of a live sample (what its KV cache holds).</summary>
    public IReadOnlyList<int> CommittedTokens(long sampleId) => _samples[sampleId].Committed;
}
