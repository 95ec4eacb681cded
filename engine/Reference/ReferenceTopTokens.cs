using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Reference;

/// <summary>
/// Plain reference of the top-tokens kernel (<see cref="ComputeBackend.TopTokens"/>): what a draft tree expands — the
/// most probable tokens of a row's warped distribution — in double, scalar loops and one sort. It is the host path
/// draft trees always used; the backends are tested against it, and they call it themselves only for rows that
/// top-k or top-p truncates (rare in drafting, and a sort of the whole row, which the device kernel does not do).
/// </summary>
public static class ReferenceTopTokens
{
    /// <summary>
    /// The <paramref name="count"/> most probable tokens of the warped distribution of <paramref name="logits"/>
    /// (temperature → top-k → top-p as in <see cref="SamplingParams"/>; temperature 0 ranks by the softmax of the
    /// raw logits), with their probabilities; most probable first, lowest token on ties, zero-probability tokens left out.
    /// </summary>
    public static List<(int Token, double Probability)> TopTokens(ReadOnlySpan<float> logits, in SamplingParams sampling, int count)
    {
        int v = logits.Length;
        double max = double.NegativeInfinity;
        foreach (float l in logits)
        {
            if (float.IsNaN(l) || float.IsPositiveInfinity(l)) throw new ArgumentException("draft logits contain NaN or +Inf", nameof(logits));
            max = Math.Max(max, l);
        }
        if (double.IsNegativeInfinity(max)) throw new ArgumentException("draft logits have no finite value", nameof(logits));
        double invT = sampling.IsGreedy ? 1 : 1.0 / sampling.Temperature;
        bool topK = !sampling.IsGreedy && sampling.TopK > 0 && sampling.TopK < v;
        bool topP = !sampling.IsGreedy && sampling.TopP < 1f;
        return topK || topP ? Truncated(logits, sampling, count, max, invT, topK, topP) : Full(logits, count, max, invT);
    }

    /// <summary>Full softmax: one pass for the denominator, one partial selection of the best tokens by logit.</summary>
    private static List<(int Token, double Probability)> Full(ReadOnlySpan<float> logits, int count, double max, double invT)
    {
        var result = new List<(int, double)>(count);
        double sum = 0;
        var best = new List<int>(count + 1);
        for (int i = 0; i < logits.Length; i++)
        {
            sum += Math.Exp((logits[i] - max) * invT);
            if (best.Count == count && logits[i] <= logits[best[^1]]) continue;
            int at = best.Count;
            while (at > 0 && logits[i] > logits[best[at - 1]]) at--;
            best.Insert(at, i);
            if (best.Count > count) best.RemoveAt(count);
        }
        foreach (int t in best)
        {
            double probability = Math.Exp((logits[t] - max) * invT) / sum;
            if (probability > 0) result.Add((t, probability));
        }
        return result;
    }

    /// <summary>Truncated: sort once by logit (descending, lowest token on ties), keep the top-k, then the top-p prefix.</summary>
    private static List<(int Token, double Probability)> Truncated(ReadOnlySpan<float> logits, in SamplingParams sampling, int count, double max, double invT, bool topK, bool topP)
    {
        int v = logits.Length;
        var order = Enumerable.Range(0, v).ToArray();
        var keys = logits.ToArray();
        Array.Sort(order, (a, b) => keys[a] != keys[b] ? keys[b].CompareTo(keys[a]) : a.CompareTo(b));
        var w = new double[v];
        for (int j = 0; j < v; j++) w[j] = Math.Exp((keys[order[j]] - max) * invT);
        int kept = v;
        if (topK)
        {
            float kth = keys[order[sampling.TopK - 1]];
            kept = sampling.TopK;
            while (kept < v && keys[order[kept]] == kth) kept++; // ties kept
        }
        if (topP)
        {
            double mass = 0;
            for (int j = 0; j < kept; j++) mass += w[j];
            double target = sampling.TopP * mass, cumulative = 0;
            for (int j = 0; j < kept; j++)
            {
                cumulative += w[j];
                if (cumulative < target) continue;
                int cut = j + 1;
                while (cut < kept && w[cut] == w[j]) cut++; // ties at τ kept
                kept = cut;
                break;
            }
        }
        double total = 0;
        for (int j = 0; j < kept; j++) total += w[j];
        var result = new List<(int, double)>(count);
        for (int j = 0; j < Math.Min(count, kept); j++)
            if (w[j] > 0) result.Add((order[j], w[j] / total));
        return result;
    }
}
