using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The per-chunk arithmetic of <see cref="CpuRowTeam"/>: a fused exp-and-sum pass (its own 8-lane exp, a degree-6
/// polynomial after Cody–Waite reduction, ≤ 2 ulp; <c>TensorPrimitives.Exp</c> evaluates in double and costs about
/// twice as much) and one chunk of the exponential race (vectorised Philox, an 8-lane log, per-lane argmax). Each is
/// a pure function of its chunk, so a row's result does not depend on how its chunks are spread over threads.
/// </summary>
internal static unsafe class CpuRowMath
{
    /// <summary>Below this exp underflows the normal floats; the kernel returns 0 there (and for −∞).</summary>
    private const float Lowest = -87f;

    /// <summary>1.5 · 2^23: adding it rounds a float of magnitude below 2^22 to an integer held in the low mantissa bits.</summary>
    private const float Shifter = 12582912f;

    /// <summary>exp(t) for t ≤ 0 (−∞ included, → 0); 0 below −87.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> t)
    {
        var lowest = Vector256.Create(Lowest);
        var x = Vector256.MaxNative(t, lowest);
        var shifted = Vector256.FusedMultiplyAdd(x, Vector256.Create(1.44269504f), Vector256.Create(Shifter)); // n = round(x · log2 e) in its low bits
        var n = shifted - Vector256.Create(Shifter);
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x); // x − n · ln 2 in two parts (Cody–Waite)
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
        var poly = Vector256.Create(1.9875691500e-4f);
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(1.3981999507e-3f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(8.3334519073e-3f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(4.1665795894e-2f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(1.6666665459e-1f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(5.0000001201e-1f));
        poly = Vector256.FusedMultiplyAdd(poly, r * r, r + Vector256<float>.One);
        // 2^n: n (two's complement in the low bits of shifted) moved into the exponent field; the shifter's own bits shift out.
        var scale = ((shifted.AsInt32() << 23) + Vector256.Create(127 << 23)).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(t, lowest), Vector256<float>.Zero, poly * scale);
    }

    /// <summary>Σ exp((x − max) · invT) over <paramref name="n"/> values (max ≥ each finite x); writes the terms to
    /// <paramref name="w"/> unless it is null.</summary>
    public static float ExpSum(float* x, float* w, int n, float max, float invT)
    {
        var m = Vector256.Create(max);
        var s = Vector256.Create(invT);
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = acc0, acc2 = acc0, acc3 = acc0;
        var tail = stackalloc float[8];
        int i = 0;
        for (; i <= n - 32; i += 32)
        {
            // Four independent exp chains per step, for the core to overlap.
            var e0 = Exp((Vector256.Load(x + i) - m) * s);
            var e1 = Exp((Vector256.Load(x + i + 8) - m) * s);
            var e2 = Exp((Vector256.Load(x + i + 16) - m) * s);
            var e3 = Exp((Vector256.Load(x + i + 24) - m) * s);
            if (w != null)
            {
                e0.Store(w + i);
                e1.Store(w + i + 8);
                e2.Store(w + i + 16);
                e3.Store(w + i + 24);
            }
            acc0 += e0;
            acc1 += e1;
            acc2 += e2;
            acc3 += e3;
        }
        for (; i < n; i += 8)
        {
            // The last partial vector is padded with −∞ (whose term is 0).
            int lanes = Math.Min(8, n - i);
            for (int j = 0; j < 8; j++) tail[j] = j < lanes ? x[i + j] : float.NegativeInfinity;
            var e = Exp((Vector256.Load(tail) - m) * s);
            if (w != null)
            {
                e.Store(tail);
                for (int j = 0; j < lanes; j++) w[i + j] = tail[j];
            }
            acc0 += e;
        }
        return Vector256.Sum((acc0 + acc1) + (acc2 + acc3));
    }

    /// <summary>ln u for u in (0, 1] (normal floats): exponent and mantissa split, Cephes-style polynomial on [√½, √2), ~1 ulp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Log(Vector256<float> u)
    {
        var bits = u.AsInt32();
        var e = ((bits >> 23) & Vector256.Create(0xFF)) - Vector256.Create(127);
        var f = ((bits & Vector256.Create(0x007FFFFF)) | Vector256.Create(0x3F800000)).AsSingle(); // [1, 2)
        var big = Vector256.GreaterThan(f, Vector256.Create(1.41421356f));
        f = Vector256.ConditionalSelect(big, f * Vector256.Create(0.5f), f);
        var ef = Vector256.ConvertToSingle(e - big.AsInt32()); // big is all ones (−1) where halved
        var x = f - Vector256<float>.One;
        var z = x * x;
        var y = Vector256.Create(7.0376836292e-2f);
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(-1.1514610310e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(1.1676998740e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(-1.2420140846e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(1.4249322787e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(-1.6668057665e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(2.0000714765e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(-2.4999993993e-1f));
        y = Vector256.FusedMultiplyAdd(y, x, Vector256.Create(3.3333331174e-1f));
        y = y * x * z;
        y = Vector256.FusedMultiplyAdd(ef, Vector256.Create(-2.12194440e-4f), y);
        y = Vector256.FusedMultiplyAdd(z, Vector256.Create(-0.5f), y);
        return Vector256.FusedMultiplyAdd(ef, Vector256.Create(0.693359375f), x + y);
    }

    /// <summary>
    /// The exponential race over w[0..n) (vocabulary ids firstIndex + j): the largest w_j / −ln U_j over positive
    /// weights, the earliest index on ties; (−1, −1) if no weight is positive. Eight lanes at a time, each keeping its
    /// best; vectors without a positive weight draw nothing.
    /// </summary>
    public static (float Score, int Index) Race(float* w, int n, int firstIndex, in SamplingParams p, int position, uint stream)
    {
        if (!CpuPhilox.IsVectorized) return RaceScalar(w, n, firstIndex, p, position, stream);
        // Per lane the most negative w / ln U (= −score; −0 for a zero weight) and its index.
        var bestQ = Vector256.Create(float.PositiveInfinity);
        var bestI = Vector256<int>.Zero;
        var lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        var tail = stackalloc float[16];
        var philox = new CpuPhilox(p, position, stream);
        int j = 0;
        if (CpuPhilox.IsWide)
            for (; j <= n - 32; j += 32)
            {
                float* at = w + j;
                Vector256<float> w0 = Vector256.Load(at), w1 = Vector256.Load(at + 8), w2 = Vector256.Load(at + 16), w3 = Vector256.Load(at + 24);
                if (!Vector256.GreaterThanAny(Vector256.Max(Vector256.Max(w0, w1), Vector256.Max(w2, w3)), Vector256<float>.Zero)) continue;
                var (u0, u1) = philox.Uniform32((uint)(firstIndex + j));
                Keep(w0 / Log(u0.GetLower()), lane + Vector256.Create(j), ref bestQ, ref bestI);
                Keep(w1 / Log(u0.GetUpper()), lane + Vector256.Create(j + 8), ref bestQ, ref bestI);
                Keep(w2 / Log(u1.GetLower()), lane + Vector256.Create(j + 16), ref bestQ, ref bestI);
                Keep(w3 / Log(u1.GetUpper()), lane + Vector256.Create(j + 24), ref bestQ, ref bestI);
            }
        for (; j < n; j += 16)
        {
            Vector256<float> low, high;
            if (j <= n - 16)
            {
                low = Vector256.Load(w + j);
                high = Vector256.Load(w + j + 8);
            }
            else
            {
                for (int k = 0; k < 16; k++) tail[k] = j + k < n ? w[j + k] : 0f; // padding weighs 0: never a candidate
                low = Vector256.Load(tail);
                high = Vector256.Load(tail + 8);
            }
            if (!Vector256.GreaterThanAny(Vector256.Max(low, high), Vector256<float>.Zero)) continue;
            var (uLow, uHigh) = philox.Uniform16((uint)(firstIndex + j));
            Keep(low / Log(uLow), lane + Vector256.Create(j), ref bestQ, ref bestI);
            Keep(high / Log(uHigh), lane + Vector256.Create(j + 8), ref bestQ, ref bestI);
        }
        float min = float.PositiveInfinity;
        int index = int.MaxValue;
        for (int k = 0; k < 8; k++)
        {
            float v = bestQ[k];
            if (v < min || (v == min && bestI[k] < index)) { min = v; index = bestI[k]; }
        }
        return min < 0f ? (-min, firstIndex + index) : (-1f, -1);
    }

    /// <summary>Per lane, keeps (q, index) where q is below the best so far (strictly: the earlier index wins ties).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Keep(Vector256<float> q, Vector256<int> index, ref Vector256<float> bestQ, ref Vector256<int> bestI)
    {
        var better = Vector256.LessThan(q, bestQ);
        bestQ = Vector256.ConditionalSelect(better, q, bestQ);
        bestI = Vector256.ConditionalSelect(better.AsInt32(), index, bestI);
    }

    /// <summary><see cref="Race"/> one value at a time (no AVX2), with the same arithmetic per value.</summary>
    private static (float Score, int Index) RaceScalar(float* w, int n, int firstIndex, in SamplingParams p, int position, uint stream)
    {
        float best = -1f;
        int index = -1;
        for (int j = 0; j < n; j++)
        {
            if (!(w[j] > 0f)) continue;
            float u = Random.Philox.Uniform(p.SeedLo, p.SeedHi, position, p.SampleId, stream, (uint)(firstIndex + j));
            float score = -(w[j] / Log(Vector256.Create(u)).ToScalar());
            if (score > best) { best = score; index = firstIndex + j; }
        }
        return (best, index);
    }
}
