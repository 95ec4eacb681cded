using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The per-chunk arithmetic of <see cref="CpuRowTeam"/>: a fused exp-and-sum pass (its own 8-lane exp, a degree-6
/// polynomial after Cody–Waite reduction, ~1 ulp) and one chunk of the exponential race. Each is a pure function of
/// its chunk, so a row's result does not depend on how its chunks are spread over threads.
/// </summary>
internal static unsafe class CpuRowMath
{
    private static readonly Vector256<float> Log2E = Vector256.Create(1.44269504f);
    private static readonly Vector256<float> Ln2Hi = Vector256.Create(0.693359375f);
    private static readonly Vector256<float> Ln2Lo = Vector256.Create(-2.12194440e-4f);
    /// <summary>Below this exp underflows the normal floats; the kernel returns 0 there (and for −∞).</summary>
    private static readonly Vector256<float> Lowest = Vector256.Create(-87.0f);

    /// <summary>exp(t) for t ≤ 0 (−∞ included, → 0); 0 below −87.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> t)
    {
        var x = Vector256.Max(t, Lowest);
        var n = Vector256.Round(x * Log2E);
        var r = Vector256.FusedMultiplyAdd(n, -Ln2Hi, x);
        r = Vector256.FusedMultiplyAdd(n, -Ln2Lo, r);
        var poly = Vector256.Create(1.9875691500e-4f);
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(1.3981999507e-3f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(8.3334519073e-3f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(4.1665795894e-2f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(1.6666665459e-1f));
        poly = Vector256.FusedMultiplyAdd(poly, r, Vector256.Create(5.0000001201e-1f));
        poly = Vector256.FusedMultiplyAdd(poly, r * r, r + Vector256<float>.One);
        var scale = ((Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23).AsSingle();
        return Vector256.ConditionalSelect(Vector256.LessThan(t, Lowest), Vector256<float>.Zero, poly * scale);
    }

    /// <summary>Σ exp((x − max) · invT) over <paramref name="n"/> values (max ≥ each finite x); writes the terms to
    /// <paramref name="w"/> unless it is null.</summary>
    public static float ExpSum(float* x, float* w, int n, float max, float invT)
    {
        var m = Vector256.Create(max);
        var s = Vector256.Create(invT);
        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = Vector256<float>.Zero;
        var tail = stackalloc float[8];
        int i = 0;
        for (; i <= n - 16; i += 16)
        {
            var e0 = Exp((Vector256.Load(x + i) - m) * s);
            var e1 = Exp((Vector256.Load(x + i + 8) - m) * s);
            if (w != null)
            {
                e0.Store(w + i);
                e1.Store(w + i + 8);
            }
            acc0 += e0;
            acc1 += e1;
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
        return Vector256.Sum(acc0 + acc1);
    }

    /// <summary>Uniforms per block of the race: a stack buffer, and the granularity at which all-zero weights are skipped.</summary>
    private const int RaceBlock = 256;

    /// <summary>
    /// The exponential race over w[0..n) (vocabulary ids firstIndex + j): updates (bestScore, best) with the largest
    /// w_j / −ln U_j over positive weights, keeping the earlier index on ties. Blocks without a positive weight draw nothing.
    /// </summary>
    public static void Race(float* w, int n, int firstIndex, in SamplingParams p, int position, uint stream, ref float bestScore, ref int best)
    {
        Span<float> scores = stackalloc float[RaceBlock];
        for (int b = 0; b < n; b += RaceBlock)
        {
            int m = Math.Min(RaceBlock, n - b);
            var weights = new ReadOnlySpan<float>(w + b, m);
            if (!(TensorPrimitives.Max(weights) > 0f)) continue;
            var block = scores[..m];
            CpuPhilox.Uniforms(p, position, stream, (uint)(firstIndex + b), block);
            TensorPrimitives.Log(block, block);
            // w / ln U = −score: negative for a positive weight, −0 for a zero one, so the minimum is the best score.
            TensorPrimitives.Divide(weights, block, block);
            int j = TensorPrimitives.IndexOfMin(block);
            float score = -block[j];
            if (score > bestScore)
            {
                bestScore = score;
                best = firstIndex + b + j;
            }
        }
    }
}
