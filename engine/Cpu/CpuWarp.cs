using System.Numerics.Tensors;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The warp (temperature → top-k → top-p) and the exponential race on one row, shared by the CPU sample and
/// verify kernels. SIMD passes where they fit; thresholds by radix selection over float bit patterns (4 passes
/// of 8 bits), which finds exactly the values the thresholds in <see cref="SamplingParams"/> define.
/// </summary>
internal static class CpuWarp
{
    /// <summary>Max of a logit row, or the row's status (<see cref="KernelValidation.RowNotFinite"/>, ...) when it has NaN/+Inf or no finite value.</summary>
    public static int RowMax(ReadOnlySpan<float> row, out float max)
    {
        // Max propagates NaN, and +Inf wins; so one SIMD pass checks the row.
        max = TensorPrimitives.Max(row);
        if (float.IsNaN(max) || float.IsPositiveInfinity(max)) return KernelValidation.RowNotFinite;
        if (float.IsNegativeInfinity(max)) return KernelValidation.RowNoFiniteLogit;
        return KernelValidation.RowOk;
    }

    /// <summary>First index holding <paramref name="max"/> (numeric equality, so −0 and +0 tie as in the reference).</summary>
    public static int FirstIndexOf(ReadOnlySpan<float> row, float max)
    {
        int i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            var target = new System.Numerics.Vector<float>(max);
            int width = System.Numerics.Vector<float>.Count;
            for (; i <= row.Length - width; i += width)
                if (System.Numerics.Vector.EqualsAny(new System.Numerics.Vector<float>(row.Slice(i, width)), target))
                    break;
        }
        for (; i < row.Length; i++)
            if (row[i] == max) return i;
        return -1;
    }

    /// <summary>
    /// Writes the warped, unnormalised weights of <paramref name="row"/> into <paramref name="w"/> and returns their
    /// sum; <paramref name="fullSum"/> is Σ exp((l − max) / T) before top-k/top-p (for log_softmax).
    /// </summary>
    public static float Warp(ReadOnlySpan<float> row, float max, in SamplingParams p, Span<float> w, out float fullSum)
    {
        int v = row.Length;
        w = w[..v];
        fullSum = ExpShifted(row, max, 1f / p.Temperature, w);
        bool topK = p.TopK > 0 && p.TopK < v, topP = p.TopP < 1f;
        if (!topK && !topP) return fullSum;

        if (topK)
        {
            float threshold = KthLargest(row, p.TopK);
            for (int i = 0; i < v; i++)
                if (row[i] < threshold) w[i] = 0f;
        }
        if (topP)
        {
            float tau = MassThreshold(w, p.TopP * (double)TensorPrimitives.Sum(w));
            for (int i = 0; i < v; i++)
                if (w[i] < tau) w[i] = 0f;
        }
        return TensorPrimitives.Sum(w);
    }

    /// <summary>Elements per pass of <see cref="ExpShifted"/>: small enough that the chunk stays in L1 between its passes.</summary>
    private const int ExpChunk = 4096;

    /// <summary>w = exp((row − max) · invT); returns Σ w. Chunked so the row streams from memory once.</summary>
    public static float ExpShifted(ReadOnlySpan<float> row, float max, float invTemperature, Span<float> w)
    {
        w = w[..row.Length];
        float sum = 0f;
        for (int start = 0; start < row.Length; start += ExpChunk)
        {
            int n = Math.Min(ExpChunk, row.Length - start);
            var chunk = w.Slice(start, n);
            TensorPrimitives.Subtract(row.Slice(start, n), max, chunk);
            if (invTemperature != 1f) TensorPrimitives.Multiply(chunk, invTemperature, chunk);
            TensorPrimitives.Exp(chunk, chunk);
            sum += TensorPrimitives.Sum(chunk);
        }
        return sum;
    }

    /// <summary>Σ exp(row − max) without keeping the weights (greedy rows need only the log-softmax denominator).</summary>
    public static float SumExpShifted(ReadOnlySpan<float> row, float max)
    {
        Span<float> chunk = stackalloc float[ExpChunk];
        float sum = 0f;
        for (int start = 0; start < row.Length; start += ExpChunk)
        {
            int n = Math.Min(ExpChunk, row.Length - start);
            var c = chunk[..n];
            TensorPrimitives.Subtract(row.Slice(start, n), max, c);
            TensorPrimitives.Exp(c, c);
            sum += TensorPrimitives.Sum(c);
        }
        return sum;
    }

    /// <summary>log_softmax at a token from the row max and Σ exp((l − max) · invT).</summary>
    public static float LogSoftmax(float logit, float max, float invTemperature, float fullSum) =>
        (logit - max) * invTemperature - MathF.Log(fullSum);

    /// <summary>Exponential race over positive weights: argmax w_i / −ln U_i, lowest index on ties; −1 if none.</summary>
    public static int Race(ReadOnlySpan<float> w, in SamplingParams p, int position, uint stream)
    {
        int best = -1;
        float bestScore = -1f;
        for (int i = 0; i < w.Length; i++)
        {
            float wi = w[i];
            if (!(wi > 0f)) continue;
            float u = Philox.Uniform(p.SeedLo, p.SeedHi, position, p.SampleId, stream, (uint)i);
            float score = wi / -MathF.Log(u);
            if (score > bestScore) { bestScore = score; best = i; }
        }
        return best;
    }

    /// <summary>Order-preserving map of a (non-NaN) float to uint.</summary>
    private static uint Key(float f)
    {
        uint b = BitConverter.SingleToUInt32Bits(f);
        return (b & 0x8000_0000u) != 0 ? ~b : b | 0x8000_0000u;
    }

    private static float FromKey(uint k) =>
        BitConverter.UInt32BitsToSingle((k & 0x8000_0000u) != 0 ? k & 0x7FFF_FFFFu : ~k);

    /// <summary>Rows up to this long find their thresholds by sorting a stack copy: cheaper than 4 radix passes with 256 bins each.</summary>
    private const int SortBelow = 512;

    /// <summary>The k-th largest value of <paramref name="row"/> (with multiplicity), by radix selection.</summary>
    public static float KthLargest(ReadOnlySpan<float> row, int k)
    {
        if (row.Length <= SortBelow)
        {
            Span<float> sorted = stackalloc float[row.Length];
            row.CopyTo(sorted);
            sorted.Sort();
            return sorted[row.Length - k];
        }
        Span<int> histogram = stackalloc int[256];
        uint prefix = 0;
        int remaining = k;
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            histogram.Clear();
            uint highMask = shift == 24 ? 0u : ~0u << (shift + 8);
            for (int i = 0; i < row.Length; i++)
            {
                uint key = Key(row[i]);
                if ((key & highMask) == prefix) histogram[(int)((key >> shift) & 255)]++;
            }
            int b = 255;
            for (; b > 0; b--)
            {
                if (histogram[b] >= remaining) break;
                remaining -= histogram[b];
            }
            prefix |= (uint)b << shift;
        }
        return FromKey(prefix);
    }

    /// <summary>
    /// The largest weight τ with Σ_{w ≥ τ} w ≥ <paramref name="target"/>, by radix selection over the bit patterns of
    /// the (non-negative) weights with per-bin mass in double. If rounding leaves the target unmet, keeps more (lower τ).
    /// </summary>
    public static float MassThreshold(ReadOnlySpan<float> w, double target)
    {
        if (w.Length <= SortBelow)
        {
            Span<float> sorted = stackalloc float[w.Length];
            w.CopyTo(sorted);
            sorted.Sort();
            double cumulative = 0;
            for (int i = sorted.Length - 1; i >= 0 && sorted[i] > 0f; i--)
            {
                cumulative += sorted[i];
                if (cumulative >= target) return sorted[i];
            }
            return 0f; // rounding left the target unmet: keep every positive weight
        }
        Span<double> mass = stackalloc double[256];
        uint prefix = 0;
        double remaining = target;
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            mass.Clear();
            uint highMask = shift == 24 ? 0u : ~0u << (shift + 8);
            for (int i = 0; i < w.Length; i++)
            {
                float x = w[i];
                if (!(x > 0f)) continue;
                uint key = BitConverter.SingleToUInt32Bits(x);
                if ((key & highMask) == prefix) mass[(int)((key >> shift) & 255)] += x;
            }
            int b = 255, lowestNonEmpty = -1;
            for (; b >= 0; b--)
            {
                if (mass[b] > 0) lowestNonEmpty = b;
                if (mass[b] > 0 && mass[b] >= remaining) break;
                remaining -= mass[b];
            }
            if (b < 0)
            {
                if (lowestNonEmpty < 0) return 0f;
                b = lowestNonEmpty;
                remaining = double.PositiveInfinity; // and the lowest value inside it
            }
            prefix |= (uint)b << shift;
        }
        return BitConverter.UInt32BitsToSingle(prefix);
    }
}
