using System.Diagnostics;
using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// The start-up profile of the <see cref="CostModel"/>: times real forwards of the target (and draft) model on the
/// running device over batches of 1 … maxTokens tokens, shaped like decode steps (one token for each of up to 256
/// samples after a short committed context; beyond 256 tokens, chains), and records them as measurements. Decode
/// shape matters: <c>off</c> is measured as it runs, so a selector that never picks it still knows its price, while
/// speculative (chain-shaped) verification is corrected online the first time it is tried. The whole sweep runs once
/// untimed first, so the timings are of warm (JIT-compiled) code. Nothing is assumed: the selector's first decisions
/// rest on these timings, later ones on every step's own.
/// </summary>
public static class CostProfiler
{
    private const int Context = 16, MaxSamples = 256;

    /// <param name="repeats">Timed runs per size; the median is recorded.</param>
    public static CostModel Profile(ITargetModel target, ITargetModel? draft, string device, int maxTokens = 256, int repeats = 3)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (maxTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "must be >= 1");
        var cost = new CostModel(device);
        var sizes = new List<int>();
        for (int n = 1; n <= maxTokens; n *= 2) sizes.Add(n);
        foreach (var (n, seconds, pairs, attention) in Measure(target, sizes, repeats)) cost.ObserveVerify(n, pairs, seconds, attention);
        if (draft is not null)
            foreach (var (n, seconds, _, _) in Measure(draft, sizes, repeats)) cost.ObserveDraftForward(n, seconds);
        return cost;
    }

    /// <returns>Per size: the median forward's seconds, its attended pairs and (for a model with an <see cref="IAttentionClock"/>) its attention seconds.</returns>
    private static IEnumerable<(int Tokens, double Seconds, double Pairs, double? Attention)> Measure(ITargetModel model, List<int> sizes, int repeats)
    {
        int samples = Math.Min(MaxSamples, sizes[^1]);
        var ids = Enumerable.Range(0, samples).Select(i => long.MinValue + i).ToArray();
        var results = new List<(int, double, double, double?)>();
        var attentionClock = model as IAttentionClock;
        var logits = model.Backend.Allocate<float>((long)sizes[^1] * model.VocabSize, "cost profile logits");
        try
        {
            // Committed context for every profiling sample (token ids 1.. are valid in any vocabulary of size > Context).
            var prefillOffsets = new int[samples + 1];
            var prefillTokens = new List<int>();
            var prefillParents = new List<int>();
            for (int b = 0; b < samples; b++)
            {
                if (!model.TryReserve(ids[b], Context)) throw new InvalidOperationException("cost profile: the KV cache cannot hold the profiling samples; raise the memory budget");
                for (int t = 0; t < Context; t++) { prefillTokens.Add((t * 7 + b) % model.VocabSize); prefillParents.Add(t - 1); }
                prefillOffsets[b + 1] = prefillTokens.Count;
            }
            model.Forward(new ForwardBatch { SampleIds = ids, TokenOffsets = prefillOffsets, Tokens = prefillTokens.ToArray(), Parents = prefillParents.ToArray(), LogitRows = [] }, logits);
            foreach (var id in ids) model.Commit(id, Enumerable.Range(0, Context).ToArray());

            // The first pass over every size warms up (JIT, sessions, buffers) and is discarded.
            foreach (var (n, pass) in sizes.Select(n => (n, 0)).Concat(sizes.Select(n => (n, 1))))
            {
                int batch = Math.Min(samples, n);
                var offsets = new int[batch + 1];
                var tokens = new int[n];
                var parents = new int[n];
                double pairs = 0;
                for (int b = 0; b < batch; b++)
                {
                    int k = n / batch + (b < n % batch ? 1 : 0);
                    offsets[b + 1] = offsets[b] + k;
                    for (int j = 0; j < k; j++) { tokens[offsets[b] + j] = (j * 5 + b + 1) % model.VocabSize; parents[offsets[b] + j] = j - 1; }
                    pairs += k * (Context + k / 2.0);
                }
                var times = new List<(double Seconds, double? Attention)>();
                for (int r = 0; r < (pass == 0 ? 1 : repeats); r++)
                {
                    double attentionBefore = attentionClock?.AttentionSeconds ?? 0;
                    for (int b = 0; b < batch; b++)
                        if (!model.TryReserve(ids[b], offsets[b + 1] - offsets[b]))
                            throw new InvalidOperationException("cost profile: the KV cache cannot hold the profiling samples; raise the memory budget");
                    var clock = Stopwatch.StartNew();
                    model.Forward(new ForwardBatch
                    {
                        SampleIds = ids.AsSpan(0, batch), TokenOffsets = offsets, Tokens = tokens, Parents = parents,
                        LogitRows = Enumerable.Range(0, n).ToArray(),
                    }, logits);
                    times.Add((clock.Elapsed.TotalSeconds, attentionClock?.AttentionSeconds - attentionBefore));
                    for (int b = 0; b < batch; b++) model.Rollback(ids[b]);
                }
                times.Sort((a, b) => a.Seconds.CompareTo(b.Seconds));
                if (pass == 1) results.Add((n, times[times.Count / 2].Seconds, pairs, times[times.Count / 2].Attention));
            }
        }
        finally
        {
            foreach (var id in ids) model.Release(id);
            logits.Dispose();
        }
        return results;
    }
}
