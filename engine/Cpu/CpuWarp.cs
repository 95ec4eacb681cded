using System.Numerics.Tensors;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// Row helpers shared by the CPU sample and verify kernels: row status, first index of the max, and the warp's
/// truncation (top-k → top-p) by radix selection over float bit patterns (4 passes of 8 bits), which finds exactly
/// the values the thresholds in <see cref="SamplingParams"/> define. The exp passes and the exponential race run
/// chunked over a <see cref="CpuRowTeam"/>.
/// </summary>
internal static class CpuWarp
{
    /// <summary>The status of a row whose max (NaN-propagating) is <paramref name="max"/>: NaN or +Inf anywhere → <see cref="KernelValidation.RowNotFinite"/>, all −Inf → <see cref="KernelValidation.RowNoFiniteLogit"/>.</summary>
    public static int RowStatus(float max)
    {
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

    /// <summary>True when <paramref name="p"/> truncates a row of <paramref name="v"/> values (top-k or top-p on).</summary>
    public static bool Truncates(in SamplingParams p, int v) => (p.TopK > 0 && p.TopK < v) || p.TopP < 1f;

    /// <summary>
    /// Applies top-k then top-p to the weights <paramref name="w"/> = exp((row − max) / T) of <paramref name="row"/>
    /// (zeroing the dropped ones) and returns the kept mass.
    /// </summary>
    public static float Truncate(ReadOnlySpan<float> row, in SamplingParams p, Span<float> w)
    {
        int v = row.Length;
        w = w[..v];
        if (p.TopK > 0 && p.TopK < v)
        {
            float threshold = KthLargest(row, p.TopK);
            for (int i = 0; i < v; i++)
                if (row[i] < threshold) w[i] = 0f;
        }
        if (p.TopP < 1f)
        {
            float tau = MassThreshold(w, p.TopP * (double)TensorPrimitives.Sum(w));
            for (int i = 0; i < v; i++)
                if (w[i] < tau) w[i] = 0f;
        }
        return TensorPrimitives.Sum(w);
    }

    /// <summary>log_softmax at a token from the row max and Σ exp((l − max) · invT).</summary>
    public static float LogSoftmax(float logit, float max, float invTemperature, float fullSum) =>
        (logit - max) * invTemperature - MathF.Log(fullSum);

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
