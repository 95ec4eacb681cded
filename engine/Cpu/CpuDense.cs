using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The dense ops of a decoder layer in managed SIMD for the CPU: projections (x·Wᵀ with the [out, in] Hugging
/// Face weight layout read in place), RMSNorm, rotary embedding and SwiGLU. Every op works on a range of rows or
/// tokens so that a parallel region can split it without copies.
/// </summary>
/// <remarks>
/// <b>Batch invariance.</b> Every output element of <see cref="Project"/> is one FMA chain over the input in
/// 8-wide steps, a fixed horizontal sum, then the scalar tail: the same operations in the same order whichever
/// register block (4×4, 4×3, 4×1, 1×1) computes it and however many tokens the call holds. A token's result therefore
/// does not depend on what else is in the batch, so a decode step, a prefill and a tree verification agree bit
/// for bit on the same token — which is what makes greedy speculative output equal plain greedy output exactly.
/// </remarks>
public static unsafe class CpuDense
{
    private const int Lanes = 8;

    /// <summary>
    /// y[t, o] (+)= Σ_i x[t, i]·w[o, i] (+ bias[o]) for rows o ∈ [<paramref name="rowStart"/>, <paramref name="rowEnd"/>)
    /// and tokens t ∈ [0, <paramref name="tokens"/>). With <paramref name="accumulate"/> the result is added to y (a
    /// residual), else it replaces y.
    /// </summary>
    /// <param name="x">// [tokens, inDim], row stride inDim</param>
    /// <param name="w">// [outDim, inDim]</param>
    /// <param name="bias">// [outDim] or null</param>
    /// <param name="y">// [tokens, yStride]; row o of the weight lands in column o</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Project(float* x, int tokens, int inDim, float* w, float* bias, float* y, int yStride, int rowStart, int rowEnd, bool accumulate) =>
        Project(x, tokens, inDim, w, bias, y, yStride, rowStart, rowEnd, accumulate, TokenGroup);

    /// <summary><see cref="Project"/> with tokens in register blocks of <paramref name="group"/> (3 or 4): the same bits either way.</summary>
    internal static void Project(float* x, int tokens, int inDim, float* w, float* bias, float* y, int yStride, int rowStart, int rowEnd, bool accumulate, int group)
    {
        if (group is not (3 or 4)) throw new ArgumentOutOfRangeException(nameof(group), group, "must be 3 or 4");
        // Tokens in tiles of whole groups (x tile ≤ tile·inDim floats stays in L2 while every weight row of the range
        // streams past it), so a long prefill does not re-read all of x from memory once per 4 weight rows.
        int tile = TokenTileGroups * group;
        for (int t0 = 0; t0 < tokens; t0 += tile)
        {
            int tn = Math.Min(tile, tokens - t0);
            ProjectTile(x + (long)t0 * inDim, tn, inDim, w, bias, y + (long)t0 * yStride, yStride, rowStart, rowEnd, accumulate, group);
        }
    }

    /// <summary>
    /// Blocks of 4 weight rows ahead that <see cref="Project"/> prefetches. Measured on the 2-core AMD EPYC (Zen 4), one
    /// thread streaming 92 MB of 512-wide rows: 16 tokens took 15.6 ms without prefetch, 11.2 ms 1 block ahead, 9.0 ms
    /// 2 or 4 ahead (the in-cache ceiling is about 8 ms). A single token reads the rows one after another without it
    /// (<see cref="BlockMinTokens"/>).
    /// </summary>
    private const int PrefetchBlocks = 2;

    /// <summary>
    /// Fewest tokens that go through the 4-row register blocks; a single token reads the rows one after another. One
    /// token's rows as one sequential stream are what the hardware prefetchers follow best (4 rows interleaved without
    /// software prefetch took 6.0–8.5 ms for 92 MB of 512-wide rows on one thread of the 2-core EPYC, row after row
    /// 3.9–4.7 ms). But row after row, each (row, token) dot product is one dependent FMA chain at a time: 2 and 3 tokens
    /// were bound by the FMA latency, not by the weights — a batch-1 forward of the medium model (2-core Zen 3, 2026-12-07)
    /// took 4.8–5.3 ms for 2 tokens and 6.6–6.9 ms for 3, against 3.2–4.4 ms for 1 and 4.7–6.3 ms for 4. Through the blocks
    /// (4 or 12 chains at once, the next blocks prefetched) 2 tokens took 3.4–4.4 ms and 3 tokens 3.8–5.2 ms. A chain:1
    /// or chain:2 step at batch 1, and a plain decode step of 2 or 3 samples, are such forwards.
    /// </summary>
    private const int BlockMinTokens = 2;

    /// <summary>Token groups per tile of <see cref="Project"/>: 32 (or 24) tokens of a 1,024-wide input are 128 (96) KiB.</summary>
    private const int TokenTileGroups = 8;

    /// <summary>
    /// Tokens per register block. 4 rows × 4 tokens hold 16 accumulators, 4 inputs and a weight row: 21 vector
    /// registers, which fit the 32 of AVX-512 (the JIT uses them for 256-bit code too) but not the 16 of AVX2, where
    /// five accumulators went to the stack and back every 8 inputs. 4 rows × 3 tokens (12 + 3 + 1 = 16) do not spill:
    /// on a 2-core AMD EPYC without AVX-512 (Zen 3), one thread projected 2,752 × 512 weights at 41.7–42.2 GMAC/s for
    /// 16–1,024 tokens, against 23.2–23.6 GMAC/s with 4 × 4 blocks.
    /// </summary>
    private static readonly int TokenGroup = Avx512F.VL.IsSupported ? 4 : 3;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ProjectTile(float* x, int tokens, int inDim, float* w, float* bias, float* y, int yStride, int rowStart, int rowEnd, bool accumulate, int group)
    {
        int o = rowStart;
        Span<int> sizes = stackalloc int[TokenTileGroups + 2];
        int passes = Passes(tokens, group, sizes);
        // One token (a decode step of one sample: bound by reading w) reads the rows one after another below, as one
        // sequential stream; two or more go through the blocks (see BlockMinTokens). Each element is the same single
        // FMA chain either way, so the results are the same bits.
        for (; tokens >= BlockMinTokens && o + 4 <= rowEnd; o += 4)
        {
            float* w0 = w + (long)o * inDim;
            // The rows of a block ahead come from memory while this block computes: each pass over the tokens
            // prefetches its share of them, so the weight stream never waits for the arithmetic or the reverse.
            long ahead = (long)PrefetchBlocks * 4;
            float* next = o + ahead + 4 <= rowEnd ? w0 + ahead * inDim : null;
            int share = 4 * inDim / passes;
            for (int pass = 0, t = 0; pass < passes; t += sizes[pass], pass++)
            {
                float* prefetch = next == null ? null : next + pass * share;
                float* xt = x + (long)t * inDim, yt = y + (long)t * yStride;
                switch (sizes[pass])
                {
                    case 4: Block4x4(xt, inDim, w0, bias, yt, yStride, o, accumulate, prefetch, share); break;
                    case 3: Block4x3(xt, inDim, w0, bias, yt, yStride, o, accumulate, prefetch, share); break;
                    case 2: Block4x2(xt, inDim, w0, bias, yt, yStride, o, accumulate, prefetch, share); break;
                    default: Block4x1(xt, inDim, w0, bias, yt, o, accumulate, prefetch, share); break;
                }
            }
        }
        for (; o < rowEnd; o++)
            for (int t = 0; t < tokens; t++)
            {
                float* xr = x + (long)t * inDim, wr = w + (long)o * inDim;
                var acc = Vector256<float>.Zero;
                int i = 0;
                for (; i + Lanes <= inDim; i += Lanes) acc = Vector256.FusedMultiplyAdd(Vector256.Load(wr + i), Vector256.Load(xr + i), acc);
                Store(y + (long)t * yStride + o, Finish(acc, xr, wr, i, inDim), bias, o, accumulate);
            }
    }

    /// <summary>
    /// The token passes over each 4-row block: groups of <paramref name="group"/>, and what is left as one pass of 2 or
    /// 3, or two of 2 (a group and one token left become 2 + 2 for groups of 3, 3 + 2 for groups of 4). A pass of one
    /// token is 4 dependent FMA chains, bound by the FMA latency at half the FMA rate; a pass of two is 8 chains, enough
    /// to keep both FMA units busy. Measured before (one token left over as its own pass) on a batch-1 forward of the
    /// medium model, 2-core AMD EPYC (Zen 3): 4 tokens (3 + 1) took 4.9 ms against 3.8–3.9 ms for 3, and 8 tokens
    /// (3 + 3 + 1 + 1) 6.4–6.6 ms against 5.5–5.6 ms for 7. Returns the number of passes written to <paramref name="sizes"/>.
    /// </summary>
    internal static int Passes(int tokens, int group, Span<int> sizes)
    {
        int full = tokens / group, left = tokens % group, n = 0;
        if (left == 1 && full > 0) { full--; left += group; }
        for (int g = 0; g < full; g++) sizes[n++] = group;
        switch (left)
        {
            case 0: break;
            case 4: sizes[n++] = 2; sizes[n++] = 2; break;       // 3 + 1 with groups of 3
            case 5: sizes[n++] = 3; sizes[n++] = 2; break;       // 4 + 1 with groups of 4
            default: sizes[n++] = left; break;                   // 1 (a single token), 2 or 3
        }
        return n;
    }

    /// <summary>Prefetches the cache line at <paramref name="at"/>, and the one after it when <paramref name="two"/> (more than a line per step).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* at, bool two)
    {
        if (!Sse.IsSupported) return;
        Sse.Prefetch0(at);
        if (two) Sse.Prefetch0(at + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(Vector256<float> acc, float* x, float* w, int i, int inDim)
    {
        float s = Vector256.Sum(acc);
        for (; i < inDim; i++) s = MathF.FusedMultiplyAdd(w[i], x[i], s);
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* y, float value, float* bias, int o, bool accumulate)
    {
        if (bias != null) value += bias[o];
        *y = accumulate ? *y + value : value;
    }

    /// <summary>Rows o..o+3 for tokens t..t+3: 16 accumulators, 8 loads per 16 FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x4(float* x, int inDim, float* w0, float* bias, float* y, int yStride, int o, bool accumulate, float* next, int share)
    {
        long perStep = Math.Max(1, (long)share * Lanes / inDim);   // floats of the share to prefetch per step of 8
        float* w1 = w0 + inDim, w2 = w1 + inDim, w3 = w2 + inDim;
        float* x0 = x, x1 = x + inDim, x2 = x1 + inDim, x3 = x2 + inDim;
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
        int i = 0;
        for (; i + Lanes <= inDim; i += Lanes)
        {
            if (next != null) Prefetch(next + (i >> 3) * perStep, perStep > 16);
            var v0 = Vector256.Load(x0 + i); var v1 = Vector256.Load(x1 + i); var v2 = Vector256.Load(x2 + i); var v3 = Vector256.Load(x3 + i);
            var r = Vector256.Load(w0 + i);
            a00 = Vector256.FusedMultiplyAdd(r, v0, a00); a01 = Vector256.FusedMultiplyAdd(r, v1, a01); a02 = Vector256.FusedMultiplyAdd(r, v2, a02); a03 = Vector256.FusedMultiplyAdd(r, v3, a03);
            r = Vector256.Load(w1 + i);
            a10 = Vector256.FusedMultiplyAdd(r, v0, a10); a11 = Vector256.FusedMultiplyAdd(r, v1, a11); a12 = Vector256.FusedMultiplyAdd(r, v2, a12); a13 = Vector256.FusedMultiplyAdd(r, v3, a13);
            r = Vector256.Load(w2 + i);
            a20 = Vector256.FusedMultiplyAdd(r, v0, a20); a21 = Vector256.FusedMultiplyAdd(r, v1, a21); a22 = Vector256.FusedMultiplyAdd(r, v2, a22); a23 = Vector256.FusedMultiplyAdd(r, v3, a23);
            r = Vector256.Load(w3 + i);
            a30 = Vector256.FusedMultiplyAdd(r, v0, a30); a31 = Vector256.FusedMultiplyAdd(r, v1, a31); a32 = Vector256.FusedMultiplyAdd(r, v2, a32); a33 = Vector256.FusedMultiplyAdd(r, v3, a33);
        }
        float* y0 = y, y1 = y + yStride, y2 = y1 + yStride, y3 = y2 + yStride;
        Store(y0 + o, Finish(a00, x0, w0, i, inDim), bias, o, accumulate); Store(y1 + o, Finish(a01, x1, w0, i, inDim), bias, o, accumulate);
        Store(y2 + o, Finish(a02, x2, w0, i, inDim), bias, o, accumulate); Store(y3 + o, Finish(a03, x3, w0, i, inDim), bias, o, accumulate);
        Store(y0 + o + 1, Finish(a10, x0, w1, i, inDim), bias, o + 1, accumulate); Store(y1 + o + 1, Finish(a11, x1, w1, i, inDim), bias, o + 1, accumulate);
        Store(y2 + o + 1, Finish(a12, x2, w1, i, inDim), bias, o + 1, accumulate); Store(y3 + o + 1, Finish(a13, x3, w1, i, inDim), bias, o + 1, accumulate);
        Store(y0 + o + 2, Finish(a20, x0, w2, i, inDim), bias, o + 2, accumulate); Store(y1 + o + 2, Finish(a21, x1, w2, i, inDim), bias, o + 2, accumulate);
        Store(y2 + o + 2, Finish(a22, x2, w2, i, inDim), bias, o + 2, accumulate); Store(y3 + o + 2, Finish(a23, x3, w2, i, inDim), bias, o + 2, accumulate);
        Store(y0 + o + 3, Finish(a30, x0, w3, i, inDim), bias, o + 3, accumulate); Store(y1 + o + 3, Finish(a31, x1, w3, i, inDim), bias, o + 3, accumulate);
        Store(y2 + o + 3, Finish(a32, x2, w3, i, inDim), bias, o + 3, accumulate); Store(y3 + o + 3, Finish(a33, x3, w3, i, inDim), bias, o + 3, accumulate);
    }

    /// <summary>Rows o..o+3 for tokens t..t+2: 12 accumulators, 7 loads per 12 FMAs, 16 vector registers in all.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x3(float* x, int inDim, float* w0, float* bias, float* y, int yStride, int o, bool accumulate, float* next, int share)
    {
        long perStep = Math.Max(1, (long)share * Lanes / inDim);
        float* w1 = w0 + inDim, w2 = w1 + inDim, w3 = w2 + inDim;
        float* x0 = x, x1 = x + inDim, x2 = x1 + inDim;
        Vector256<float> a00 = default, a01 = default, a02 = default, a10 = default, a11 = default, a12 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a30 = default, a31 = default, a32 = default;
        int i = 0;
        for (; i + Lanes <= inDim; i += Lanes)
        {
            if (next != null) Prefetch(next + (i >> 3) * perStep, perStep > 16);
            var v0 = Vector256.Load(x0 + i); var v1 = Vector256.Load(x1 + i); var v2 = Vector256.Load(x2 + i);
            var r = Vector256.Load(w0 + i);
            a00 = Vector256.FusedMultiplyAdd(r, v0, a00); a01 = Vector256.FusedMultiplyAdd(r, v1, a01); a02 = Vector256.FusedMultiplyAdd(r, v2, a02);
            r = Vector256.Load(w1 + i);
            a10 = Vector256.FusedMultiplyAdd(r, v0, a10); a11 = Vector256.FusedMultiplyAdd(r, v1, a11); a12 = Vector256.FusedMultiplyAdd(r, v2, a12);
            r = Vector256.Load(w2 + i);
            a20 = Vector256.FusedMultiplyAdd(r, v0, a20); a21 = Vector256.FusedMultiplyAdd(r, v1, a21); a22 = Vector256.FusedMultiplyAdd(r, v2, a22);
            r = Vector256.Load(w3 + i);
            a30 = Vector256.FusedMultiplyAdd(r, v0, a30); a31 = Vector256.FusedMultiplyAdd(r, v1, a31); a32 = Vector256.FusedMultiplyAdd(r, v2, a32);
        }
        float* y0 = y, y1 = y + yStride, y2 = y1 + yStride;
        Store(y0 + o, Finish(a00, x0, w0, i, inDim), bias, o, accumulate); Store(y1 + o, Finish(a01, x1, w0, i, inDim), bias, o, accumulate);
        Store(y2 + o, Finish(a02, x2, w0, i, inDim), bias, o, accumulate);
        Store(y0 + o + 1, Finish(a10, x0, w1, i, inDim), bias, o + 1, accumulate); Store(y1 + o + 1, Finish(a11, x1, w1, i, inDim), bias, o + 1, accumulate);
        Store(y2 + o + 1, Finish(a12, x2, w1, i, inDim), bias, o + 1, accumulate);
        Store(y0 + o + 2, Finish(a20, x0, w2, i, inDim), bias, o + 2, accumulate); Store(y1 + o + 2, Finish(a21, x1, w2, i, inDim), bias, o + 2, accumulate);
        Store(y2 + o + 2, Finish(a22, x2, w2, i, inDim), bias, o + 2, accumulate);
        Store(y0 + o + 3, Finish(a30, x0, w3, i, inDim), bias, o + 3, accumulate); Store(y1 + o + 3, Finish(a31, x1, w3, i, inDim), bias, o + 3, accumulate);
        Store(y2 + o + 3, Finish(a32, x2, w3, i, inDim), bias, o + 3, accumulate);
    }

    /// <summary>Rows o..o+3 for tokens t..t+1: 8 accumulators, 6 loads per 8 FMAs (a group's leftover tokens).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x2(float* x, int inDim, float* w0, float* bias, float* y, int yStride, int o, bool accumulate, float* next, int share)
    {
        long perStep = Math.Max(1, (long)share * Lanes / inDim);
        float* w1 = w0 + inDim, w2 = w1 + inDim, w3 = w2 + inDim;
        float* x0 = x, x1 = x + inDim;
        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default;
        Vector256<float> a20 = default, a21 = default, a30 = default, a31 = default;
        int i = 0;
        for (; i + Lanes <= inDim; i += Lanes)
        {
            if (next != null) Prefetch(next + (i >> 3) * perStep, perStep > 16);
            var v0 = Vector256.Load(x0 + i); var v1 = Vector256.Load(x1 + i);
            var r = Vector256.Load(w0 + i);
            a00 = Vector256.FusedMultiplyAdd(r, v0, a00); a01 = Vector256.FusedMultiplyAdd(r, v1, a01);
            r = Vector256.Load(w1 + i);
            a10 = Vector256.FusedMultiplyAdd(r, v0, a10); a11 = Vector256.FusedMultiplyAdd(r, v1, a11);
            r = Vector256.Load(w2 + i);
            a20 = Vector256.FusedMultiplyAdd(r, v0, a20); a21 = Vector256.FusedMultiplyAdd(r, v1, a21);
            r = Vector256.Load(w3 + i);
            a30 = Vector256.FusedMultiplyAdd(r, v0, a30); a31 = Vector256.FusedMultiplyAdd(r, v1, a31);
        }
        float* y0 = y, y1 = y + yStride;
        Store(y0 + o, Finish(a00, x0, w0, i, inDim), bias, o, accumulate); Store(y1 + o, Finish(a01, x1, w0, i, inDim), bias, o, accumulate);
        Store(y0 + o + 1, Finish(a10, x0, w1, i, inDim), bias, o + 1, accumulate); Store(y1 + o + 1, Finish(a11, x1, w1, i, inDim), bias, o + 1, accumulate);
        Store(y0 + o + 2, Finish(a20, x0, w2, i, inDim), bias, o + 2, accumulate); Store(y1 + o + 2, Finish(a21, x1, w2, i, inDim), bias, o + 2, accumulate);
        Store(y0 + o + 3, Finish(a30, x0, w3, i, inDim), bias, o + 3, accumulate); Store(y1 + o + 3, Finish(a31, x1, w3, i, inDim), bias, o + 3, accumulate);
    }

    /// <summary>Rows o..o+3 for one token (the matrix-vector path of a decode step: bound by reading w).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block4x1(float* x, int inDim, float* w0, float* bias, float* y, int o, bool accumulate, float* next, int share)
    {
        long perStep = Math.Max(1, (long)share * Lanes / inDim);
        float* w1 = w0 + inDim, w2 = w1 + inDim, w3 = w2 + inDim;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int i = 0;
        for (; i + Lanes <= inDim; i += Lanes)
        {
            if (next != null) Prefetch(next + (i >> 3) * perStep, perStep > 16);
            var v = Vector256.Load(x + i);
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(w0 + i), v, a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(w1 + i), v, a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.Load(w2 + i), v, a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.Load(w3 + i), v, a3);
        }
        Store(y + o, Finish(a0, x, w0, i, inDim), bias, o, accumulate);
        Store(y + o + 1, Finish(a1, x, w1, i, inDim), bias, o + 1, accumulate);
        Store(y + o + 2, Finish(a2, x, w2, i, inDim), bias, o + 2, accumulate);
        Store(y + o + 3, Finish(a3, x, w3, i, inDim), bias, o + 3, accumulate);
    }

    /// <summary>y[t] = x[t] / √(mean(x[t]²) + ε) · w for tokens [<paramref name="tokenStart"/>, <paramref name="tokenEnd"/>).</summary>
    /// <param name="x">// [tokens, dim]</param>
    /// <param name="y">// [tokens, dim]; may be x</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, float* w, float eps, float* y, int dim, int tokenStart, int tokenEnd)
    {
        for (int t = tokenStart; t < tokenEnd; t++)
        {
            float* xr = x + (long)t * dim, yr = y + (long)t * dim;
            var acc = Vector256<float>.Zero;
            int i = 0;
            for (; i + Lanes <= dim; i += Lanes)
            {
                var v = Vector256.Load(xr + i);
                acc = Vector256.FusedMultiplyAdd(v, v, acc);
            }
            float ss = Vector256.Sum(acc);
            for (; i < dim; i++) ss = MathF.FusedMultiplyAdd(xr[i], xr[i], ss);
            float scale = 1f / MathF.Sqrt(ss / dim + eps);
            var s = Vector256.Create(scale);
            for (i = 0; i + Lanes <= dim; i += Lanes) (Vector256.Load(xr + i) * s * Vector256.Load(w + i)).Store(yr + i);
            for (; i < dim; i++) yr[i] = xr[i] * scale * w[i];
        }
    }

    /// <summary>
    /// Rotary embedding in place on heads [<paramref name="headStart"/>, <paramref name="headEnd"/>) of every token:
    /// x' = x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁), with cos/sin rows looked up by the token's position.
    /// </summary>
    /// <param name="x">// [tokens, rowStride]; head h starts at column h·headDim</param>
    /// <param name="positions">// [tokens]</param>
    /// <param name="cos">// [positions, headDim] (<see cref="RopeTable"/>)</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rope(float* x, int tokens, int rowStride, int headDim, int headStart, int headEnd, int* positions, float* cos, float* sin)
    {
        int half = headDim / 2;
        for (int t = 0; t < tokens; t++)
        {
            float* c = cos + (long)positions[t] * headDim, s = sin + (long)positions[t] * headDim;
            for (int h = headStart; h < headEnd; h++)
            {
                float* r = x + (long)t * rowStride + h * headDim;
                for (int i = 0; i < half; i++)
                {
                    float a = r[i], b = r[i + half];
                    r[i] = a * c[i] - b * s[i];
                    r[i + half] = b * c[i + half] + a * s[i + half];
                }
            }
        }
    }

    /// <summary>
    /// cos and sin of position·θ^(−2(i mod Hd/2)/Hd) for positions [<paramref name="from"/>, <paramref name="to"/>) into
    /// rows of <paramref name="cos"/>/<paramref name="sin"/> ([positions, headDim]). The angle is rounded as the ONNX graphs
    /// round it: the frequency in double cast to float, times the position as a float, in float.
    /// </summary>
    public static void RopeTable(int headDim, double theta, int from, int to, Span<float> cos, Span<float> sin)
    {
        int half = headDim / 2;
        Span<float> inv = stackalloc float[headDim];
        for (int i = 0; i < headDim; i++) inv[i] = (float)Math.Pow(theta, -2.0 * (i % half) / headDim);
        for (int p = from; p < to; p++)
            for (int i = 0; i < headDim; i++)
            {
                float angle = p * inv[i];
                cos[p * headDim + i] = MathF.Cos(angle);
                sin[p * headDim + i] = MathF.Sin(angle);
            }
    }

    /// <summary>
    /// gate[t, c] = silu(gate[t, c]) · up[t, c] for columns [<paramref name="colStart"/>, <paramref name="colEnd"/>): 8 columns
    /// at a time, the last partial vector through a padded copy, so every element takes the same vector exp whatever
    /// the range's bounds (batch invariance).
    /// </summary>
    /// <param name="gate">// [tokens, width], overwritten with the product</param>
    /// <param name="up">// [tokens, width]</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SiluMul(float* gate, float* up, int tokens, int width, int colStart, int colEnd)
    {
        float* gt = stackalloc float[Lanes], ut = stackalloc float[Lanes];
        var one = Vector256.Create(1f);
        for (int t = 0; t < tokens; t++)
        {
            float* g = gate + (long)t * width, u = up + (long)t * width;
            int c = colStart;
            for (; c + Lanes <= colEnd; c += Lanes)
            {
                var v = Vector256.Load(g + c);
                (v / (one + Vector256.Exp(-v)) * Vector256.Load(u + c)).Store(g + c);
            }
            if (c < colEnd)
            {
                int n = colEnd - c;
                for (int j = 0; j < Lanes; j++) (gt[j], ut[j]) = j < n ? (g[c + j], u[c + j]) : (0f, 0f);
                var v = Vector256.Load(gt);
                (v / (one + Vector256.Exp(-v)) * Vector256.Load(ut)).Store(gt);
                for (int j = 0; j < n; j++) g[c + j] = gt[j];
            }
        }
    }
}
