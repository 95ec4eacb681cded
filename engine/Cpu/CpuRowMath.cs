using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The per-chunk arithmetic of <see cref="CpuRowTeam"/>: a one-pass max and exp-sum, a max and a fused exp-and-sum
/// pass for rows whose weights are written (its own 8-lane exp, a degree-6 minimax polynomial after Cody–Waite reduction,
/// ≤ 2 ulp; <c>TensorPrimitives.Exp</c> evaluates in double and costs about twice as much) and one chunk of the
/// exponential race (vectorised Philox, an 8-lane log, per-lane argmax). Each is a pure function of its chunk, so a
/// row's result does not depend on how its chunks are spread over threads.
/// </summary>
internal static unsafe class CpuRowMath
{
    /// <summary>Below this exp underflows the normal floats; the kernel returns 0 there (and for −∞).</summary>
    private const float Lowest = -87f;

    /// <summary>1.5 · 2^23: adding it rounds a float of magnitude below 2^22 to an integer held in the low mantissa bits.</summary>
    private const float Shifter = 12582912f;

    /// <summary>exp(t) for t ≤ 0 (−∞ included, → 0); 0 below −87.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> t) =>
        Vector256.ConditionalSelect(Vector256.LessThan(t, Vector256.Create(Lowest)), Vector256<float>.Zero, ExpTerm(t));

    /// <summary>
    /// exp(t) for −87 ≤ t ≤ 0; below −87 (−∞ included) it returns exp(−87) ≈ 1.6e-38 instead of 0, so it serves only
    /// sums that hold the row max's term of 1, which such terms cannot change. A degree-6 polynomial after Cody–Waite
    /// reduction (relative error 3e-9 before rounding, ~1 ulp after), and 2^n added into the exponent field, which
    /// stays normal since t ≥ −87 keeps n ≥ −126 with a polynomial ≥ 1 there: three operations fewer than a
    /// select-guarded degree-7 exp with a multiply by 2^n, 1.6× faster in the sum pass.
    /// </summary>
    /// <remarks>Every step has its own local: the JIT keeps single-assignment locals in registers, where a reassigned
    /// one (poly = fma(poly, …) on every step) went through the stack at every step, which made the exp pass 1.7× slower.
    /// The coefficients are a minimax fit of (exp(r) − 1 − r) / r² on [−ln 2 / 2, ln 2 / 2] for relative error.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ExpTerm(Vector256<float> t)
    {
        var x = Vector256.MaxNative(t, Vector256.Create(Lowest));
        var shifted = Vector256.FusedMultiplyAdd(x, Vector256.Create(1.44269504f), Vector256.Create(Shifter)); // n = round(x · log2 e) in its low bits
        var n = shifted - Vector256.Create(Shifter);
        var high = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x); // x − n · ln 2 in two parts (Cody–Waite)
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), high);
        var p4 = Vector256.FusedMultiplyAdd(Vector256.Create(1.3814613e-3f), r, Vector256.Create(8.3687098e-3f));
        var p3 = Vector256.FusedMultiplyAdd(p4, r, Vector256.Create(4.1668387e-2f));
        var p2 = Vector256.FusedMultiplyAdd(p3, r, Vector256.Create(1.6666521e-1f));
        var p1 = Vector256.FusedMultiplyAdd(p2, r, Vector256.Create(4.9999993e-1f));
        var poly = Vector256.FusedMultiplyAdd(p1, r * r, r + Vector256<float>.One);
        // 2^n: n (two's complement in the low bits of shifted) added to the exponent field; the shifter's own bits shift out.
        return (poly.AsInt32() + (shifted.AsInt32() << 23)).AsSingle();
    }

    /// <summary>
    /// The max of x[0..n) (n ≥ 1), NaN if any value is NaN; of equal zeros either may come back. MaxNative and one NaN
    /// test per two vectors: half the time of <c>TensorPrimitives.Max</c>, whose IEEE max (NaN and signed zeros) costs
    /// blends on every vector, and a third of a row's greedy verify before this.
    /// </summary>
    public static float Max(float* x, int n)
    {
        var max0 = Vector256.Create(float.NegativeInfinity);
        var max1 = max0;
        var nan = Vector256<float>.Zero;
        int i = 0;
        for (; i <= n - 16; i += 16)
        {
            Vector256<float> a = Vector256.Load(x + i), b = Vector256.Load(x + i + 8);
            max0 = Vector256.MaxNative(max0, a);
            max1 = Vector256.MaxNative(max1, b);
            nan |= Vector256.IsNaN(a + b); // also +∞ + −∞, in a row that holds +∞: not finite either way
        }
        if (nan.AsInt32() != Vector256<int>.Zero) return float.NaN;
        var both = Vector256.MaxNative(max0, max1);
        float max = float.NegativeInfinity;
        for (int k = 0; k < 8; k++) max = Math.Max(max, both[k]);
        for (; i < n; i++)
        {
            if (float.IsNaN(x[i])) return float.NaN;
            max = Math.Max(max, x[i]);
        }
        return max;
    }

    /// <summary>Σ exp((x − max) · invT) over <paramref name="n"/> values (max ≥ each finite x), the terms written to
    /// <paramref name="w"/> (rows without weights to write take <see cref="MaxExpSum"/>).</summary>
    /// <remarks>One vector per step and one accumulator: the core overlaps the exp chains of successive steps by
    /// itself, while more chains per step ran the JIT out of registers (16 on AVX2) and were slower.</remarks>
    public static float ExpSum(float* x, float* w, int n, float max, float invT)
    {
        var m = Vector256.Create(max);
        var s = Vector256.Create(invT);
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i <= n - 8; i += 8)
        {
            var e = Exp((Vector256.Load(x + i) - m) * s);
            e.Store(w + i);
            acc += e;
        }
        if (i < n)
        {
            // The last partial vector is padded with −∞ (whose term is 0).
            var tail = stackalloc float[8];
            int lanes = n - i;
            for (int j = 0; j < 8; j++) tail[j] = j < lanes ? x[i + j] : float.NegativeInfinity;
            var e = Exp((Vector256.Load(tail) - m) * s);
            e.Store(tail);
            for (int j = 0; j < lanes; j++) w[i + j] = tail[j];
            acc += e;
        }
        return Vector256.Sum(acc);
    }

    /// <summary>Values per block of <see cref="MaxExpSum"/>: eight vectors, whose max is taken before their exps.</summary>
    private const int Block = 64;

    /// <summary>
    /// The max of x[0..n) (NaN if any value is NaN) and Σ exp((x − max) · invT), in one pass: each block's max is
    /// taken from registers, the sum is kept relative to the running max and rescaled when a block raises it (a few
    /// times per row). Where a max pass and then an exp pass cost a read of the row each, this one overlaps the read
    /// with the exps: a fifth less time per row. Its terms take <see cref="ExpTerm"/> (a term below −87 adds ~1e-38
    /// to a sum of at least 1, the max's own term: nothing).
    /// </summary>
    public static float MaxExpSum(float* x, int n, float invT, out float max)
    {
        var state = new OnlineSum { Max = float.NegativeInfinity, Running = Vector256.Create(float.NegativeInfinity), Finite = Vector256<float>.AllBitsSet };
        int i = 0;
        for (; i <= n - Block; i += Block) state.Add(x + i, invT);
        if (i < n)
        {
            var tail = stackalloc float[Block];
            for (int j = 0; j < Block; j++) tail[j] = i + j < n ? x[i + j] : float.NegativeInfinity; // −∞ adds 0
            state.Add(tail, invT);
        }
        max = state.Finite.AsInt32() == Vector256<int>.AllBitsSet ? state.Max : float.NaN; // as integers: all ones is a NaN
        return Vector256.Sum(state.Sum);
    }

    /// <summary>The running state of <see cref="MaxExpSum"/>.</summary>
    private struct OnlineSum
    {
        public float Max;
        public Vector256<float> Running, Sum, Finite; // Running: Max in every lane; Finite: all ones while no NaN was seen

        /// <summary>Adds the block at <paramref name="at"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Add(float* at, float invT)
        {
            Vector256<float> a0 = Vector256.Load(at), a1 = Vector256.Load(at + 8), a2 = Vector256.Load(at + 16), a3 = Vector256.Load(at + 24);
            Vector256<float> a4 = Vector256.Load(at + 32), a5 = Vector256.Load(at + 40), a6 = Vector256.Load(at + 48), a7 = Vector256.Load(at + 56);
            var blockMax = Vector256.MaxNative(Vector256.MaxNative(Vector256.MaxNative(a0, a1), Vector256.MaxNative(a2, a3)),
                Vector256.MaxNative(Vector256.MaxNative(a4, a5), Vector256.MaxNative(a6, a7)));
            // A pair's sum is NaN iff either is NaN or they are +∞ and −∞ (a row holding +∞ is not finite either way).
            Vector256<float> s01 = a0 + a1, s23 = a2 + a3, s45 = a4 + a5, s67 = a6 + a7;
            Finite &= Vector256.Equals(s01, s01) & Vector256.Equals(s23, s23) & Vector256.Equals(s45, s45) & Vector256.Equals(s67, s67);
            if (Vector256.GreaterThanAny(blockMax, Running)) Raise(blockMax, invT);
            if (Max == float.NegativeInfinity) return; // all −∞ so far: every term is 0
            var s = Vector256.Create(invT);
            for (int k = 0; k < Block; k += 8) Sum += ExpTerm((Vector256.Load(at + k) - Running) * s);
        }

        /// <summary>Raises the running max to the block's and rescales the sum to it.</summary>
        private void Raise(Vector256<float> blockMax, float invT)
        {
            float raised = Max;
            for (int k = 0; k < 8; k++) raised = Math.Max(raised, blockMax[k]);
            Sum *= Exp(Vector256.Create((Max - raised) * invT)); // 0 from −∞
            Max = raised;
            Running = Vector256.Create(raised);
        }
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
    /// far take no log (see <see cref="RaceVector"/>).
    /// </summary>
    public static (float Score, int Index) Race(float* w, int n, int firstIndex, in SamplingParams p, int position, uint stream)
    {
        if (!CpuPhilox.IsVectorized) return RaceScalar(w, n, firstIndex, p, position, stream);
        // Per lane the most negative w / ln U (= −score; −0 for a zero weight) and its index.
        var bestQ = Vector256.Create(float.PositiveInfinity);
        var bestI = Vector256<int>.Zero;
        var best = Vector256<float>.Zero; // the best score so far, in every lane (0: none yet)
        var tail = stackalloc float[16];
        var philox = new CpuPhilox(p, position, stream);
        for (int j = 0; j < n; j += 16)
        {
            float* at = w + j;
            if (j > n - 16)
            {
                for (int k = 0; k < 16; k++) tail[k] = j + k < n ? w[j + k] : 0f; // padding weighs 0: never a candidate
                at = tail;
            }
            Vector256<float> low = Vector256.Load(at), high = Vector256.Load(at + 8);
            if (!Vector256.GreaterThanAny(Vector256.Max(low, high), Vector256<float>.Zero)) continue;
            var (uLow, uHigh) = philox.Uniform16((uint)(firstIndex + j));
            if (RaceVector(low, high, uLow, uHigh, j, ref bestQ, ref bestI, best)) best = BestScore(bestQ);
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

    /// <summary>
    /// Sixteen lanes of the race (weights and uniforms low: j + 0..7, high: j + 8..15) against each lane's best so far;
    /// returns whether it looked at them. A lane can beat the best score S only if w / −ln U &gt; S, and −ln U ≥ 1 − U,
    /// so lanes with w · (1 + 2^-10) ≤ S · (1 − U) cannot (the margin covers the log's and the division's rounding):
    /// when no lane can, the log and division are skipped. That leaves the winner and its score as they were, since a
    /// skipped lane scores below an earlier entry; past the first few hundred entries of a chunk nearly every vector is
    /// skipped, so a race costs about its Philox draws.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool RaceVector(Vector256<float> low, Vector256<float> high, Vector256<float> uLow, Vector256<float> uHigh, int j,
        ref Vector256<float> bestQ, ref Vector256<int> bestI, Vector256<float> best)
    {
        var margin = Vector256.Create(1f + 1f / 1024f);
        var mayWin = Vector256.GreaterThan(low * margin, Vector256.FusedMultiplyAdd(-best, uLow, best))
            | Vector256.GreaterThan(high * margin, Vector256.FusedMultiplyAdd(-best, uHigh, best));
        if (mayWin.AsInt32() == Vector256<int>.Zero) return false;
        var lane = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
        Keep(low / Log(uLow), lane + Vector256.Create(j), ref bestQ, ref bestI);
        Keep(high / Log(uHigh), lane + Vector256.Create(j + 8), ref bestQ, ref bestI);
        return true;
    }

    /// <summary>The best score that <paramref name="bestQ"/> holds, in every lane (0 while none is positive).</summary>
    private static Vector256<float> BestScore(Vector256<float> bestQ)
    {
        float min = 0f; // lanes still at +∞, or at −0 for a zero weight, hold no positive score
        for (int k = 0; k < 8; k++) min = Math.Min(min, bestQ[k]);
        return Vector256.Create(-min);
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
