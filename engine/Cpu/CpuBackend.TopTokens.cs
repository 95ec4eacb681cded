using System.Buffers;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>
    /// Rows in parallel, each in one thread: its softmax denominator is summed in double in token order, so the
    /// probabilities are the reference's bit for bit and draft trees drafted through this kernel equal the host path's.
    /// </summary>
    protected override unsafe void TopTokensCore(ReadOnlySpan<SamplingParams> settings, DeviceBuffer<float> logits, ReadOnlySpan<int> rows, int vocabSize, int count, Span<int> tokens, Span<double> probabilities)
    {
        var source = Host(logits, nameof(logits));
        int n = rows.Length;
        var status = ArrayPool<int>.Shared.Rent(n);
        try
        {
            fixed (SamplingParams* settingsFixed = settings)
            fixed (int* rowsFixed = rows, tokensFixed = tokens)
            fixed (double* probabilitiesFixed = probabilities)
            {
                // Copies of the fixed pointers, which lambdas may capture.
                SamplingParams* p = settingsFixed;
                int* rowOf = rowsFixed, tokenOut = tokensFixed;
                double* probabilityOut = probabilitiesFixed;
                float* data = source.Pointer;
                void Row(int r)
                {
                    float* row = data + (long)rowOf[r] * vocabSize;
                    int* t = tokenOut + (long)r * count;
                    double* q = probabilityOut + (long)r * count;
                    if (!TopTokenRows.Truncates(p[r], vocabSize)) { status[r] = TopTokensRow(row, vocabSize, p[r], count, t, q); return; }
                    var span = new ReadOnlySpan<float>(row, vocabSize);
                    status[r] = TopTokenRows.Status(span);
                    if (status[r] == KernelValidation.RowOk) TopTokenRows.OnHost(span, p[r], new Span<int>(t, count), new Span<double>(q, count));
                }
                if ((long)n * vocabSize <= SerialRowElements || Threads == 1)
                    for (int r = 0; r < n; r++) Row(r);
                else Parallel.For(0, n, Parallelism, Row);
            }
            for (int r = 0; r < n; r++)
                if (status[r] != KernelValidation.RowOk) KernelValidation.ThrowBadRow(status[r], nameof(logits), rows[r]);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(status);
        }
    }

    /// <summary>
    /// One untruncated row: its max and status, then one pass that sums exp((l − max)·invT) and keeps the
    /// <paramref name="count"/> best tokens by logit (descending, lowest token first on ties) by insertion.
    /// </summary>
    /// <returns>The row's status (<see cref="KernelValidation.RowOk"/> or why it cannot be ranked).</returns>
    private static unsafe int TopTokensRow(float* row, int vocab, in SamplingParams p, int count, int* tokens, double* probabilities)
    {
        float max = float.NegativeInfinity;
        for (int i = 0; i < vocab; i++)
        {
            float x = row[i];
            if (float.IsNaN(x) || float.IsPositiveInfinity(x)) return KernelValidation.RowNotFinite;
            if (x > max) max = x;
        }
        if (max == float.NegativeInfinity) return KernelValidation.RowNoFiniteLogit;
        double invT = p.IsGreedy ? 1 : 1.0 / p.Temperature;
        double sum = 0;
        int kept = 0;
        for (int i = 0; i < vocab; i++)
        {
            float x = row[i];
            sum += Math.Exp((x - (double)max) * invT);
            // −Inf has probability 0 and is never listed; an equal logit ranks after the tokens kept before it.
            if (x == float.NegativeInfinity || (kept == count && x <= row[tokens[count - 1]])) continue;
            int at = kept < count ? kept++ : count - 1;
            while (at > 0 && x > row[tokens[at - 1]]) { tokens[at] = tokens[at - 1]; at--; }
            tokens[at] = i;
        }
        for (int j = 0; j < count; j++)
        {
            double probability = j < kept ? Math.Exp((row[tokens[j]] - (double)max) * invT) / sum : 0;
            // Ranked by logit, so the tokens whose probability underflows to 0 are the last ones.
            if (!(probability > 0)) { tokens[j] = -1; probability = 0; }
            probabilities[j] = probability;
        }
        return KernelValidation.RowOk;
    }
}
