using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Engine.Reference;

/// <summary>
/// Plain, deliberately simple reference of the sample kernel (and of the warp every kernel shares), written
/// straight from the semantics in <see cref="SamplingParams"/>: scalar loops in double, sorting for top-k/top-p.
/// The backends are tested against it and the CLI's selftest runs it; it shares no code with them.
/// </summary>
public static class ReferenceSampler
{
    /// <summary>Samples every row of <paramref name="logits"/> // [rows.Length, vocabSize].</summary>
    public static void Sample(ReadOnlySpan<SamplingParams> rows, ReadOnlySpan<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs)
    {
        for (int r = 0; r < rows.Length; r++)
        {
            var row = logits.Slice(r * vocabSize, vocabSize);
            CheckRow(row, "logits", r);
            var p = rows[r];
            int token = p.IsGreedy ? Argmax(row) : Race(Warp(row, p), p, p.Position, p.Stream);
            tokens[r] = token;
            logProbs[r] = (float)LogSoftmax(row, p.IsGreedy ? 1.0 : p.Temperature, token);
        }
    }

    /// <summary>NaN or +Inf anywhere, or no finite value at all → ArgumentException naming <paramref name="argument"/>.</summary>
    public static void CheckRow(ReadOnlySpan<float> row, string argument, int rowIndex)
    {
        bool anyFinite = false;
        foreach (float v in row)
        {
            if (float.IsNaN(v) || float.IsPositiveInfinity(v))
                throw new ArgumentException($"{argument}: row {rowIndex} contains NaN or +Inf", argument);
            if (float.IsFinite(v)) anyFinite = true;
        }
        if (!anyFinite) throw new ArgumentException($"{argument}: row {rowIndex} has no finite logit", argument);
    }

    /// <summary>Index of the largest value, lowest index on ties.</summary>
    public static int Argmax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++)
            if (row[i] > row[best]) best = i;
        return best;
    }

    /// <summary>log_softmax(row / temperature)[token].</summary>
    public static double LogSoftmax(ReadOnlySpan<float> row, double temperature, int token)
    {
        double max = double.NegativeInfinity;
        foreach (float v in row) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in row) sum += Math.Exp((v - max) / temperature);
        return (row[token] - max) / temperature - Math.Log(sum);
    }

    /// <summary>
    /// The warped, unnormalised weights of a non-greedy row: exp((l − max) / T), then top-k (logit ≥ the k-th largest
    /// logit), then top-p (weight ≥ τ, the largest value whose kept mass reaches TopP × kept mass). Ties are kept.
    /// </summary>
    public static double[] Warp(ReadOnlySpan<float> row, in SamplingParams p)
    {
        int v = row.Length;
        double max = double.NegativeInfinity;
        foreach (float x in row) max = Math.Max(max, x);
        var w = new double[v];
        for (int i = 0; i < v; i++) w[i] = Math.Exp((row[i] - max) / p.Temperature);

        if (p.TopK > 0 && p.TopK < v)
        {
            var sorted = row.ToArray();
            Array.Sort(sorted);
            float threshold = sorted[v - p.TopK];
            for (int i = 0; i < v; i++)
                if (row[i] < threshold) w[i] = 0;
        }

        if (p.TopP < 1f)
        {
            var sorted = (double[])w.Clone();
            Array.Sort(sorted);
            Array.Reverse(sorted);
            double total = 0;
            foreach (double x in sorted) total += x;
            double target = p.TopP * total, cumulative = 0, tau = 0;
            foreach (double x in sorted)
            {
                cumulative += x;
                tau = x;
                if (cumulative >= target) break;
            }
            for (int i = 0; i < v; i++)
                if (w[i] < tau) w[i] = 0;
        }
        return w;
    }

    /// <summary>The warped distribution, normalised; one-hot at the argmax when greedy.</summary>
    public static double[] Distribution(ReadOnlySpan<float> row, in SamplingParams p)
    {
        if (p.IsGreedy)
        {
            var oneHot = new double[row.Length];
            oneHot[Argmax(row)] = 1;
            return oneHot;
        }
        var w = Warp(row, p);
        double sum = 0;
        foreach (double x in w) sum += x;
        for (int i = 0; i < w.Length; i++) w[i] /= sum;
        return w;
    }

    /// <summary>
    /// Exponential race: argmax over i with w_i &gt; 0 of w_i / E_i, E_i = −ln U_i, U_i = Philox uniform at
    /// (seed, position, sampleId, stream, index i); lowest index on ties. −1 if no weight is positive.
    /// </summary>
    public static int Race(ReadOnlySpan<double> weights, in SamplingParams p, int position, uint stream)
    {
        int best = -1;
        double bestScore = -1;
        for (int i = 0; i < weights.Length; i++)
        {
            if (!(weights[i] > 0)) continue;
            double u = Philox.Uniform(p.SeedLo, p.SeedHi, position, p.SampleId, stream, (uint)i);
            double score = weights[i] / -Math.Log(u);
            if (score > bestScore) { bestScore = score; best = i; }
        }
        return best;
    }
}
