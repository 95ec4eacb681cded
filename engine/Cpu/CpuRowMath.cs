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
    /// weights, the earliest index on ties; (−1, −1) if no weight is positive. Sixteen lanes at a time, each keeping its
    /// best; vectors without a positive weight draw nothing, and vectors none of whose lanes can beat the best score so
    /// far (see <see cref="RaceCore"/>) take no log.
    /// </summary>
    public static (float Score, int Index) Race(float* w, int n, int firstIndex, in SamplingParams p, int position, uint stream) =>
        CpuPhilox.IsVectorized
            ? RaceCore(new GivenWeights(), w, n, firstIndex, p, position, stream)
            : RaceScalar(w, n, firstIndex, p, position, stream);

    /// <summary>
    /// <see cref="Race"/> over the weights exp((x_j − max) · invT) · scale of the logits x[0..n) (max ≥ each x_j), which
    /// are the very floats that <see cref="ExpSum"/> writes and a row team rescales by <paramref name="scale"/>; only the
    /// few lanes that may win are exponentiated. AVX2 only (<see cref="CpuPhilox.IsVectorized"/>).
    /// </summary>
    public static (float Score, int Index) RaceLogits(float* x, int n, int firstIndex, float max, float invT, float scale,
        in SamplingParams p, int position, uint stream) =>
        RaceCore(new LogitWeights(max, invT, scale), x, n, firstIndex, p, position, stream);

    /// <summary>Where a race's weights come from: given, or computed from logits.</summary>
    private interface IRaceWeights
    {
        /// <summary>The value that pads a partial last vector: its weight is 0.</summary>
        float Pad { get; }

        /// <summary>The weights of eight inputs, bit for bit as the kernels write them.</summary>
        Vector256<float> Weight(Vector256<float> x);

        /// <summary>Cheap upper bounds of <see cref="Weight"/> within a relative 2^-16 (0 exactly where the weight is 0).</summary>
        Vector256<float> Bound(Vector256<float> x);
    }

    private readonly struct GivenWeights : IRaceWeights
    {
        public float Pad => 0f;
        public Vector256<float> Weight(Vector256<float> x) => x;
        public Vector256<float> Bound(Vector256<float> x) => x;
    }

    private readonly struct LogitWeights(float max, float invT, float scale) : IRaceWeights
    {
        public float Pad => float.NegativeInfinity;

        public Vector256<float> Weight(Vector256<float> x) => Exp((x - Vector256.Create(max)) * Vector256.Create(invT)) * Vector256.Create(scale);

        /// <summary>
        /// 2^y for y = t · log2 e, with y + 127 written straight into the exponent and mantissa bits: 2^⌊y⌋ · (1 + frac y)
        /// ≥ 2^y (by at most 6.2 %), less the float rounding of t · 2^23 · log2 e (relative 2^-17 at worst).
        /// </summary>
        public Vector256<float> Bound(Vector256<float> x)
        {
            var t = (x - Vector256.Create(max)) * Vector256.Create(invT);
            var lowest = Vector256.Create(Lowest);
            var bits = Vector256.FusedMultiplyAdd(Vector256.MaxNative(t, lowest), Vector256.Create(12102203.2f), Vector256.Create(127f * 8388608f));
            var bound = Vector256.ConvertToInt32Native(bits).AsSingle() * Vector256.Create(scale);
            return Vector256.ConditionalSelect(Vector256.LessThan(t, lowest), Vector256<float>.Zero, bound);
        }
    }

    /// <summary>
    /// The race of <see cref="Race"/> over the weights of <paramref name="x"/>. A lane can beat the best score S so far
    /// only if w / −ln U &gt; S, and −ln U ≥ 1 − U, so a lane with bound(w) · (1 + 2^-10) ≤ S · (1 − U) cannot: the
    /// margin covers the bound's, the log's and the division's rounding. Skipping such lanes leaves the winner and its
    /// score as they were (a skipped lane scores below an earlier one), and past the first few hundred entries nearly
    /// every vector is skipped after its Philox draw, so the race costs about the draws alone.
    /// </summary>
    private static (float Score, int Index) RaceCore<TWeights>(TWeights weights, float* x, int n, int firstIndex,
        in SamplingParams p, int position, uint stream) where TWeights : struct, IRaceWeights
    {
        // Per lane the most negative w / ln U (= −score; −0 for a zero weight) and its index.
        var bestQ = Vector256.Create(float.PositiveInfinity);
        var bestI = Vector256<int>.Zero;
        var lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        var margin = Vector256.Create(1f + 1f / 1024f);
        var best = Vector256<float>.Zero; // S, in every lane
        var tail = stackalloc float[16];
        var philox = new CpuPhilox(p, position, stream);
        for (int j = 0; j < n; j += 16)
        {
            float* at = x + j;
            if (j > n - 16)
            {
                for (int k = 0; k < 16; k++) tail[k] = j + k < n ? x[j + k] : weights.Pad;
                at = tail;
            }
            Vector256<float> low = Vector256.Load(at), high = Vector256.Load(at + 8);
            Vector256<float> boundLow = weights.Bound(low), boundHigh = weights.Bound(high);
            if (!Vector256.GreaterThanAny(Vector256.Max(boundLow, boundHigh), Vector256<float>.Zero)) continue;
            var (uLow, uHigh) = philox.Uniform16((uint)(firstIndex + j));
            var mayWin = Vector256.GreaterThan(boundLow * margin, Vector256.FusedMultiplyAdd(-best, uLow, best))
                | Vector256.GreaterThan(boundHigh * margin, Vector256.FusedMultiplyAdd(-best, uHigh, best));
            if (mayWin == Vector256<float>.Zero) continue;
            Keep(weights.Weight(low) / Log(uLow), lane + Vector256.Create(j), ref bestQ, ref bestI);
            Keep(weights.Weight(high) / Log(uHigh), lane + Vector256.Create(j + 8), ref bestQ, ref bestI);
            float min = 0f; // S ≥ 0: lanes still at +∞ or −0 hold no positive score
            for (int k = 0; k < 8; k++) min = Math.Min(min, bestQ[k]);
            best = Vector256.Create(-min);
        }
        float winner = float.PositiveInfinity;
        int index = int.MaxValue;
        for (int k = 0; k < 8; k++)
        {
            float v = bestQ[k];
            if (v < winner || (v == winner && bestI[k] < index)) { winner = v; index = bestI[k]; }
        }
        return winner < 0f ? (-winner, firstIndex + index) : (-1f, -1);
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
