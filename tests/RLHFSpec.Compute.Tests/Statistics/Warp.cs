using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Tests.Statistics;

/// <summary>
/// The warped distribution of <see cref="SamplingParams"/> (temperature → top-k → top-p, ties kept) in double
/// precision, written out directly from its definition, for exact expected distributions in statistical tests.
/// </summary>
public static class Warp
{
    public static double[] Probabilities(ReadOnlySpan<float> logits, SamplingParams p)
    {
        int v = logits.Length;
        var probs = new double[v];
        if (p.IsGreedy)
        {
            int best = 0;
            for (int i = 1; i < v; i++) if (logits[i] > logits[best]) best = i;
            probs[best] = 1;
            return probs;
        }
        double max = double.NegativeInfinity;
        foreach (float l in logits) max = Math.Max(max, l);
        for (int i = 0; i < v; i++) probs[i] = Math.Exp((logits[i] - max) / p.Temperature);
        if (p.TopK > 0 && p.TopK < v)
        {
            var sorted = logits.ToArray();
            Array.Sort(sorted, (a, b) => b.CompareTo(a));
            float kth = sorted[p.TopK - 1];
            for (int i = 0; i < v; i++) if (logits[i] < kth) probs[i] = 0;
        }
        if (p.TopP < 1)
        {
            double total = probs.Sum();
            var sorted = probs.Where(x => x > 0).OrderByDescending(x => x).ToArray();
            double cumulative = 0, tau = 0;
            foreach (double x in sorted)
            {
                cumulative += x;
                tau = x;
                if (cumulative >= p.TopP * total) break;
            }
            for (int i = 0; i < v; i++) if (probs[i] < tau) probs[i] = 0;
        }
        double sum = probs.Sum();
        for (int i = 0; i < v; i++) probs[i] /= sum;
        return probs;
    }

    /// <summary>Draws from <paramref name="probabilities"/> with a host RNG (for drafts, independent of the kernels' Philox).</summary>
    public static int Draw(double[] probabilities, Random random)
    {
        double u = random.NextDouble(), c = 0;
        for (int i = 0; i < probabilities.Length; i++)
            if (probabilities[i] > 0 && u < (c += probabilities[i])) return i;
        return Array.FindLastIndex(probabilities, x => x > 0);
    }

    public static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}
