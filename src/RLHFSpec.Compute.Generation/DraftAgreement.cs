using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// How well a draft model agrees with the target on given sequences (target rollouts, typically). At every response
/// position both models see the same context (teacher forcing) and give next-token distributions p (target) and q
/// (draft) at the same temperature; the overlap Σ_x min(p(x), q(x)) = 1 − TV(p, q) is the probability that
/// speculative sampling accepts a token drafted there from q (the per-token acceptance rate α of Leviathan et al.,
/// 2023). Also counted: how often the two argmaxes agree (what greedy verification accepts; the overlap at T = 0).
/// Each sequence is fed to each model as one chain (a prefill-shaped forward, many sequences per call) and released
/// afterwards; nothing is committed, so the models' caches are left as they were.
/// </summary>
public static class DraftAgreement
{
    /// <summary>Sample ids of the measured sequences in the models' caches: far above a generator's (prompt × samples + sample).</summary>
    public const long FirstSampleId = 1L << 60;

    /// <summary>A prompt and the response whose positions are measured (every response token is predicted once).</summary>
    public readonly record struct Sequence(int[] Prompt, int[] Response);

    /// <summary>
    /// Mean overlap and argmax agreement over every response position of <paramref name="sequences"/>, temperature
    /// <paramref name="temperature"/> on both sides (0: both distributions one-hot at their argmax). Tokens of one
    /// forward are capped at <paramref name="maxTokensPerForward"/> (a longer sequence runs alone); the models' KV
    /// budgets must hold that many tokens (InvalidOperationException otherwise).
    /// </summary>
    public static DraftAgreementResult Measure(ITargetModel target, ITargetModel draft, IReadOnlyList<Sequence> sequences, float temperature,
        int maxTokensPerForward = 4096)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(draft);
        ArgumentNullException.ThrowIfNull(sequences);
        if (!(temperature >= 0) || !float.IsFinite(temperature)) throw new ArgumentException($"temperature: {temperature}, must be a finite number >= 0", nameof(temperature));
        if (maxTokensPerForward < 1) throw new ArgumentException($"max tokens per forward: {maxTokensPerForward}, must be >= 1", nameof(maxTokensPerForward));
        int vocab = Math.Min(target.VocabSize, draft.VocabSize);
        var measured = sequences.Where(s => s.Response.Length > 0).ToArray();
        foreach (var (s, i) in measured.Select((s, i) => (s, i)))
        {
            if (s.Prompt.Length == 0) throw new ArgumentException($"sequence {i}: empty prompt (the first response token needs a context)", nameof(sequences));
            int length = s.Prompt.Length + s.Response.Length - 1;
            if (length > target.MaxContext || length > draft.MaxContext)
                throw new ArgumentException($"sequence {i}: {length} tokens exceed a model's context ({target.MaxContext} target, {draft.MaxContext} draft)", nameof(sequences));
            foreach (int t in s.Prompt.Concat(s.Response))
                if ((uint)t >= (uint)vocab) throw new ArgumentException($"sequence {i}: token {t} outside the shared vocabulary [0, {vocab})", nameof(sequences));
        }

        double overlapSum = 0;
        long positions = 0, argmaxAgree = 0;
        var p = new double[target.VocabSize];
        var q = new double[draft.VocabSize];
        for (int start = 0; start < measured.Length;)
        {
            int end = start, tokens = 0;
            while (end < measured.Length && (end == start || tokens + Fed(measured[end]) <= maxTokensPerForward)) tokens += Fed(measured[end++]);
            var group = measured.AsSpan(start, end - start);
            var targetLogits = Logits(target, group, out int rows);
            var draftLogits = Logits(draft, group, out _);
            for (int r = 0; r < rows; r++)
            {
                var lp = targetLogits.AsSpan(r * target.VocabSize, target.VocabSize);
                var lq = draftLogits.AsSpan(r * draft.VocabSize, draft.VocabSize);
                int ap = ArgMax(lp), aq = ArgMax(lq);
                if (ap == aq) argmaxAgree++;
                if (temperature == 0) overlapSum += ap == aq ? 1 : 0;
                else
                {
                    Softmax(lp, temperature, p);
                    Softmax(lq, temperature, q);
                    double overlap = 0;
                    for (int x = 0; x < vocab; x++) overlap += Math.Min(p[x], q[x]);
                    overlapSum += overlap;
                }
            }
            positions += rows;
            start = end;
        }
        return new DraftAgreementResult(measured.Length, positions, positions == 0 ? double.NaN : overlapSum / positions,
            positions == 0 ? double.NaN : (double)argmaxAgree / positions);
    }

    /// <summary>Tokens fed for a sequence: all but the last response token (whose successor is not measured).</summary>
    private static int Fed(Sequence s) => s.Prompt.Length + s.Response.Length - 1;

    /// <summary>
    /// One forward of the group, each sequence a chain from the committed context (none); logits rows // [rows, V]
    /// in order: for each sequence the rows after its tokens prompt[^1], response[0], …, response[^2].
    /// </summary>
    private static float[] Logits(ITargetModel model, ReadOnlySpan<Sequence> group, out int rows)
    {
        int n = group.Length;
        var ids = new long[n];
        var offsets = new int[n + 1];
        rows = 0;
        for (int i = 0; i < n; i++)
        {
            ids[i] = FirstSampleId + i;
            offsets[i + 1] = offsets[i] + Fed(group[i]);
            rows += group[i].Response.Length;
        }
        var tokens = new int[offsets[n]];   // [T]
        var parents = new int[offsets[n]];  // [T]
        var logitRows = new int[rows];      // [rows]
        int row = 0;
        for (int i = 0; i < n; i++)
        {
            var s = group[i];
            int o = offsets[i], fed = Fed(s);
            s.Prompt.CopyTo(tokens, o);
            s.Response.AsSpan(0, s.Response.Length - 1).CopyTo(tokens.AsSpan(o + s.Prompt.Length));
            for (int t = 0; t < fed; t++) parents[o + t] = t - 1;
            for (int t = s.Prompt.Length - 1; t < fed; t++) logitRows[row++] = o + t;
        }
        try
        {
            for (int i = 0; i < n; i++)
                if (!model.TryReserve(ids[i], offsets[i + 1] - offsets[i]))
                    throw new InvalidOperationException($"agreement: the model's KV budget does not hold {offsets[n]} tokens at once; raise it or lower the tokens per forward");
            using var logits = model.Backend.Allocate<float>((long)rows * model.VocabSize, "agreement logits");
            model.Forward(new ForwardBatch { SampleIds = ids, TokenOffsets = offsets, Tokens = tokens, Parents = parents, LogitRows = logitRows }, logits);
            return logits.ToArray();
        }
        finally
        {
            foreach (long id in ids) model.Release(id);
        }
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    private static void Softmax(ReadOnlySpan<float> logits, float temperature, double[] probabilities)
    {
        double max = double.NegativeInfinity;
        foreach (float l in logits) max = Math.Max(max, l / (double)temperature);
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += probabilities[i] = Math.Exp(logits[i] / (double)temperature - max);
        for (int i = 0; i < logits.Length; i++) probabilities[i] /= sum;
    }
}
