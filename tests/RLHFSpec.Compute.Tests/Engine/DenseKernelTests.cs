using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Reference;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The Vulkan dense kernels (matvec, matmul, rms_norm, rope, swiglu, residual_add, embedding) against
/// <see cref="ReferenceDense"/> on random shapes and seeds, fp32 and fp16 weights. Tolerance: float32 accumulation,
/// |got − want| ≤ 1e-5·(1 + Σ|terms|); fp16 weights are compared with a reference over the same rounded weights.
/// Outputs start as random values, so a missing write or a write outside the requested columns shows.
/// </summary>
public sealed class DenseKernelTests
{
    private static VulkanBackend Vk => Backends.Vulkan;

    private static float[] RandomArray(Random r, long n, double scale = 1) => Enumerable.Range(0, (int)n).Select(_ => (float)((r.NextDouble() * 2 - 1) * scale)).ToArray();

    private static DeviceBuffer<T> Upload<T>(T[] data, string name) where T : unmanaged
    {
        var b = Vk.Allocate<T>(Math.Max(1, data.Length), name);
        b.Write(data);
        return b;
    }

    /// <summary>Half weights padded to a multiple of 4 elements, and the fp32 values they round to.</summary>
    private static (Half[] Half, float[] Rounded) ToHalf(float[] w)
    {
        var h = new Half[(w.Length + 3) / 4 * 4];
        for (int i = 0; i < w.Length; i++) h[i] = (Half)w[i];
        return (h, w.Select(v => (float)(Half)v).ToArray());
    }

    public static IEnumerable<TestCaseData> ProjectCases()
    {
        int seed = 100;
        // (tokens, inDim, outDim): sizes around the vec4 and tile edges, odd sizes that take the scalar path, more
        // than one token block, more than one 64 × 64 tile.
        foreach (var (tokens, inDim, outDim) in new[] { (1, 1, 1), (1, 32, 7), (3, 7, 5), (4, 16, 64), (5, 33, 13), (9, 64, 19), (17, 40, 36), (2, 129, 3), (37, 24, 9), (70, 68, 130), (65, 200, 65) })
            foreach (var path in new[] { MatMulPath.MatVec, MatMulPath.Tiled })
                foreach (bool half in new[] { false, true })
                    yield return new TestCaseData(tokens, inDim, outDim, path, half, ++seed).SetName($"Project({tokens}x{inDim}->{outDim},{path},{(half ? "f16" : "f32")})");
    }

    [TestCaseSource(nameof(ProjectCases))]
    public void Project_matches_the_reference(int tokens, int inDim, int outDim, MatMulPath path, bool half, int seed)
    {
        var r = new Random(seed);
        bool bias = seed % 2 == 0, accumulate = seed % 3 != 0;
        int xStride = inDim + (seed % 4 == 0 ? 4 : 0);                 // a padded input row now and then
        int yColumn = r.Next(3), yStride = yColumn + outDim + r.Next(3); // y wider than the output
        var x = RandomArray(r, (long)tokens * xStride);
        var w = RandomArray(r, (long)outDim * inDim);
        var b = bias ? RandomArray(r, outDim) : null;
        var y0 = RandomArray(r, (long)tokens * yStride);
        var (wh, wRounded) = ToHalf(w);
        using var xd = Upload(x, "x");
        using var wd = Upload(w, "w");
        using var whd = Upload(wh, "w16");
        using var bd = b is null ? null : Upload(b, "bias");
        using var yd = Upload(y0, "y");
        if (half) Vk.Project(xd, tokens, inDim, xStride, whd, outDim, bd, yd, yStride, yColumn, accumulate, path);
        else Vk.Project(xd, tokens, inDim, xStride, wd, outDim, bd, yd, yStride, yColumn, accumulate, path);
        var got = yd.ToArray();
        var want = y0.Select(v => (double)v).ToArray();
        var mag = new double[tokens * outDim];
        ReferenceDense.Project(x, tokens, inDim, xStride, half ? wRounded : w, outDim, b, want, yStride, yColumn, accumulate, mag);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < yStride; c++)
            {
                long at = (long)t * yStride + c;
                if (c < yColumn || c >= yColumn + outDim)
                {
                    Assert.That(got[at], Is.EqualTo(y0[at]), $"token {t} column {c} outside the output was written");
                    continue;
                }
                Assert.That(got[at], Is.EqualTo(want[at]).Within(1e-5 * (1 + mag[t * outDim + c - yColumn])), $"token {t} row {c - yColumn}");
            }
    }

    [TestCase(1, 24, 36)]
    [TestCase(2, 64, 64)]
    [TestCase(3, 71, 29)]
    public void MatVec_is_batch_invariant_bit_for_bit(int seed, int inDim, int outDim)
    {
        var r = new Random(seed);
        int tokens = VulkanBackend.MatVecMaxTokens - 1;   // several token blocks and a partial one
        var x = RandomArray(r, tokens * inDim);
        var w = RandomArray(r, outDim * inDim);
        var b = RandomArray(r, outDim);
        using var xd = Upload(x, "x");
        using var wd = Upload(w, "w");
        using var bd = Upload(b, "bias");
        using var all = Vk.Allocate<float>(tokens * outDim, "all");
        using var one = Vk.Allocate<float>(outDim, "one");
        using var xt = Vk.Allocate<float>(inDim, "x one");
        Vk.Project(xd, tokens, inDim, inDim, wd, outDim, bd, all, outDim, 0, false, MatMulPath.MatVec);
        var batch = all.ToArray();
        for (int t = 0; t < tokens; t += 5)
        {
            xt.Write(x.AsSpan(t * inDim, inDim));
            Vk.Project(xt, 1, inDim, inDim, wd, outDim, bd, one, outDim, 0, false, MatMulPath.MatVec);
            var single = one.ToArray();
            for (int o = 0; o < outDim; o++)
                Assert.That(BitConverter.SingleToInt32Bits(single[o]), Is.EqualTo(BitConverter.SingleToInt32Bits(batch[t * outDim + o])), $"token {t} row {o}");
        }
    }

    [Test]
    public void The_path_follows_the_token_count_and_never_names_a_missing_shader()
    {
        Assert.That(Vk.ChooseMatMulPath(1), Is.EqualTo(MatMulPath.MatVec));
        Assert.That(Vk.ChooseMatMulPath(VulkanBackend.MatVecMaxTokens), Is.EqualTo(MatMulPath.MatVec));
        // With no cooperative-matrix shader built in, a device reporting the extension still gets the tiled path.
        Assert.That(Vk.ChooseMatMulPath(VulkanBackend.MatVecMaxTokens + 1), Is.EqualTo(MatMulPath.Tiled));
        Assert.That(Vk.HasCooperativeMatrix, Is.EqualTo(Vk.Info.CooperativeMatrix));
        using var x = Vk.Allocate<float>(4, "x");
        using var w = Vk.Allocate<float>(4, "w");
        using var y = Vk.Allocate<float>(1, "y");
        Assert.Throws<ComputeException>(() => Vk.Project(x, 1, 4, 4, w, 1, null, y, 1, 0, false, MatMulPath.CooperativeMatrix));
    }

    [Test]
    public void Project_rejects_outputs_outside_the_buffer()
    {
        using var x = Vk.Allocate<float>(8, "x");
        using var w = Vk.Allocate<float>(8, "w");
        using var y = Vk.Allocate<float>(3, "y");
        var e = Assert.Throws<ArgumentException>(() => Vk.Project(x, 2, 4, 4, w, 2, null, y, 2, 0, false));
        Assert.That(e!.ParamName, Is.EqualTo("y"));
        Assert.Throws<ArgumentException>(() => Vk.Project(x, 1, 4, 4, w, 2, null, y, 2, 1, false));
    }

    [TestCase(1, 1, 5, false)]
    [TestCase(2, 3, 8, true)]
    [TestCase(3, 6, 37, false)]
    [TestCase(4, 9, 128, true)]
    [TestCase(5, 2, 1000, true)]
    public void RmsNorm_matches_the_reference(int seed, int rows, int dim, bool mapped)
    {
        var r = new Random(seed);
        int tokens = rows + 3;
        var x = RandomArray(r, tokens * dim, 3);
        var w = RandomArray(r, dim);
        int[]? map = mapped ? Enumerable.Range(0, rows).Select(_ => r.Next(tokens)).ToArray() : null;
        using var xd = Upload(x, "x");
        using var wd = Upload(w, "w");
        using var yd = Upload(RandomArray(r, rows * dim), "y");
        Vk.RmsNorm(xd, wd, rows, dim, 1e-6f, yd, map);
        var got = yd.ToArray();
        var want = ReferenceDense.RmsNorm(x, w, rows, dim, 1e-6, map);
        for (int i = 0; i < want.Length; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(1e-5 * (1 + Math.Abs(want[i]))), $"element {i}");
    }

    [TestCase(1, 8, 3, 10000.0)]
    [TestCase(2, 16, 4, 1e6)]
    [TestCase(3, 64, 2, 500000.0)]
    [TestCase(4, 6, 5, 10000.0)]
    public void Rope_matches_the_reference_rotation(int seed, int headDim, int heads, double theta)
    {
        var r = new Random(seed);
        const int tokens = 7, maxPos = 300;
        int rowStride = heads * headDim + 2;   // a wider row: the columns past the heads stay untouched
        var x = RandomArray(r, tokens * rowStride);
        var positions = Enumerable.Range(0, tokens).Select(_ => r.Next(maxPos)).ToArray();
        var cos = new float[maxPos * headDim];
        var sin = new float[maxPos * headDim];
        CpuDense.RopeTable(headDim, theta, 0, maxPos, cos, sin);
        using var xd = Upload(x, "x");
        using var cd = Upload(cos, "cos");
        using var sd = Upload(sin, "sin");
        Vk.Rope(xd, tokens, heads, headDim, rowStride, positions, cd, sd);
        var got = xd.ToArray();
        var want = ReferenceDense.Rope(x, tokens, heads, headDim, rowStride, positions, theta);
        // float angle rounding: |Δangle| ≤ position·2⁻²⁴ relative, so 1e-4 at positions < 300 (as the CPU kernel's test)
        for (int i = 0; i < want.Length; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(1e-4), $"element {i}");
    }

    [TestCase(1, 8, 4, 2)]
    [TestCase(2, 16, 2, 2)]
    [TestCase(3, 64, 14, 2)]
    [TestCase(4, 6, 3, 1)]
    public void RopeSplit_rotates_q_and_k_and_copies_v_as_the_in_place_rope_does(int seed, int headDim, int qHeads, int kvHeads)
    {
        var r = new Random(seed);
        const int tokens = 9, maxPos = 300;
        const double theta = 10000.0;
        int qw = qHeads * headDim, kvw = kvHeads * headDim, width = qw + 2 * kvw;
        var qkv = RandomArray(r, tokens * width);
        var positions = Enumerable.Range(0, tokens).Select(_ => r.Next(maxPos)).ToArray();
        var cos = new float[maxPos * headDim];
        var sin = new float[maxPos * headDim];
        CpuDense.RopeTable(headDim, theta, 0, maxPos, cos, sin);
        using var src = Upload(qkv, "qkv");
        using var cd = Upload(cos, "cos");
        using var sd = Upload(sin, "sin");
        using var q = Upload(RandomArray(r, tokens * qw), "q");
        using var k = Upload(RandomArray(r, tokens * kvw), "k");
        using var v = Upload(RandomArray(r, tokens * kvw), "v");
        Vk.RopeSplit(src, tokens, qHeads, kvHeads, headDim, positions, cd, sd, q, k, v);
        using var inPlace = Upload(qkv, "in place");
        Vk.Rope(inPlace, tokens, qHeads + kvHeads, headDim, width, positions, cd, sd);
        var (gq, gk, gv, rotated) = (q.ToArray(), k.ToArray(), v.ToArray(), inPlace.ToArray());
        var want = ReferenceDense.Rope(qkv, tokens, qHeads + kvHeads, headDim, width, positions, theta);
        Assert.That(src.ToArray(), Is.EqualTo(qkv), "the fused rows are only read");
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < width; c++)
            {
                int at = t * width + c;
                float got = c < qw ? gq[t * qw + c] : c < qw + kvw ? gk[t * kvw + c - qw] : gv[t * kvw + c - qw - kvw];
                if (c >= qw + kvw) Assert.That(got, Is.EqualTo(qkv[at]), $"token {t} v column {c - qw - kvw}");
                else
                {
                    Assert.That(got, Is.EqualTo(want[at]).Within(1e-4), $"token {t} column {c}");
                    Assert.That(BitConverter.SingleToInt32Bits(got), Is.EqualTo(BitConverter.SingleToInt32Bits(rotated[at])), $"token {t} column {c}: as the in-place rope");
                }
            }
    }

    [TestCase(1, 1, 1)]
    [TestCase(2, 5, 37)]
    [TestCase(3, 33, 130)]
    public void SwiGluFused_overwrites_the_gate_columns_of_a_gate_up_row(int seed, int tokens, int width)
    {
        var r = new Random(seed);
        var gateUp = RandomArray(r, tokens * 2 * width + 3, 6);
        using var d = Upload(gateUp, "gate-up");
        Vk.SwiGluFused(d, tokens, width);
        var got = d.ToArray();
        for (int t = 0; t < tokens; t++)
        {
            var gate = gateUp.AsSpan(t * 2 * width, width).ToArray();
            var up = gateUp.AsSpan(t * 2 * width + width, width).ToArray();
            var want = ReferenceDense.SwiGlu(gate, up);
            for (int i = 0; i < width; i++)
                Assert.That(got[t * 2 * width + i], Is.EqualTo(want[i]).Within(1e-5 * (1 + Math.Abs(want[i]))), $"token {t} element {i}");
            Assert.That(got.AsSpan(t * 2 * width + width, width).ToArray(), Is.EqualTo(up), $"token {t}: the up columns stay");
        }
        Assert.That(got[^3..], Is.EqualTo(gateUp[^3..]), "elements past the rows were written");
    }

    /// <summary>
    /// The executor's fused q/k/v and gate/up projections: one matrix whose rows are the parts' rows gives each part's
    /// outputs bit for bit as its own projection does, on both paths, so the fusion changes no logit.
    /// </summary>
    [TestCase(5, 24, MatMulPath.MatVec, false)]
    [TestCase(5, 33, MatMulPath.MatVec, true)]
    [TestCase(40, 24, MatMulPath.Tiled, true)]
    [TestCase(40, 33, MatMulPath.Tiled, false)]
    public void A_concatenated_projection_equals_the_separate_projections_bit_for_bit(int tokens, int inDim, MatMulPath path, bool half)
    {
        var r = new Random(tokens + inDim);
        int[] rows = [16, 8, 8];
        int total = rows.Sum();
        var x = RandomArray(r, tokens * inDim);
        var parts = rows.Select(n => RandomArray(r, n * inDim)).ToArray();
        var biases = rows.Select(n => RandomArray(r, n)).ToArray();
        using var xd = Upload(x, "x");
        using var fused = Vk.Allocate<float>(tokens * total, "fused");
        using var fusedBias = Upload(biases.SelectMany(b => b).ToArray(), "fused bias");
        var all = parts.SelectMany(p => p).ToArray();
        using var wf = Upload(all, "w");
        using var wh = Upload(ToHalf(all).Half, "w16");
        if (half) Vk.Project(xd, tokens, inDim, inDim, wh, total, fusedBias, fused, total, 0, false, path);
        else Vk.Project(xd, tokens, inDim, inDim, wf, total, fusedBias, fused, total, 0, false, path);
        var together = fused.ToArray();
        for (int p = 0, first = 0; p < rows.Length; first += rows[p], p++)
        {
            using var w = Upload(parts[p], "part");
            using var w16 = Upload(ToHalf(parts[p]).Half, "part16");
            using var b = Upload(biases[p], "part bias");
            using var y = Vk.Allocate<float>(tokens * rows[p], "y");
            if (half) Vk.Project(xd, tokens, inDim, inDim, w16, rows[p], b, y, rows[p], 0, false, path);
            else Vk.Project(xd, tokens, inDim, inDim, w, rows[p], b, y, rows[p], 0, false, path);
            var alone = y.ToArray();
            for (int t = 0; t < tokens; t++)
                for (int o = 0; o < rows[p]; o++)
                    Assert.That(BitConverter.SingleToInt32Bits(together[t * total + first + o]), Is.EqualTo(BitConverter.SingleToInt32Bits(alone[t * rows[p] + o])), $"part {p} token {t} row {o}");
        }
    }

    [TestCase(1, 1)]
    [TestCase(2, 37)]
    [TestCase(3, 4099)]
    public void SwiGlu_and_residual_add_match_the_reference(int seed, int count)
    {
        var r = new Random(seed);
        var gate = RandomArray(r, count + 2, 6);
        var up = RandomArray(r, count + 2, 2);
        using var gd = Upload(gate, "gate");
        using var ud = Upload(up, "up");
        Vk.SwiGlu(gd, ud, count);
        var got = gd.ToArray();
        var want = ReferenceDense.SwiGlu(gate, up);
        for (int i = 0; i < count; i++) Assert.That(got[i], Is.EqualTo(want[i]).Within(1e-5 * (1 + Math.Abs(want[i]))), $"swiglu element {i}");
        Assert.That(got[count..], Is.EqualTo(gate[count..]), "elements past the count were written");

        var y = RandomArray(r, count + 2);
        using var yd = Upload(y, "y");
        Vk.ResidualAdd(ud, yd, count);
        var sum = yd.ToArray();
        var wantSum = ReferenceDense.ResidualAdd(up, y);
        for (int i = 0; i < count; i++) Assert.That(sum[i], Is.EqualTo(wantSum[i]).Within(1e-6 * (1 + Math.Abs(wantSum[i]))), $"residual element {i}");
        Assert.That(sum[count..], Is.EqualTo(y[count..]), "elements past the count were written");
    }

    [TestCase(1, 7, 5, 3, false)]
    [TestCase(2, 100, 16, 33, false)]
    [TestCase(3, 9, 6, 4, true)]
    [TestCase(4, 300, 32, 40, true)]
    public void Embed_gathers_the_rows_of_the_tokens(int seed, int vocab, int dim, int count, bool half)
    {
        var r = new Random(seed);
        var table = RandomArray(r, vocab * dim);
        var tokens = Enumerable.Range(0, count).Select(_ => r.Next(vocab)).ToArray();
        var (th, rounded) = ToHalf(table);
        using var td = Upload(table, "table");
        using var thd = Upload(th, "table16");
        using var xd = Upload(RandomArray(r, count * dim), "x");
        if (half) Vk.Embed(tokens, thd, vocab, dim, xd);
        else Vk.Embed(tokens, td, vocab, dim, xd);
        Assert.That(xd.ToArray(), Is.EqualTo(ReferenceDense.Embed(tokens, half ? rounded : table, dim)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Vk.Embed([vocab], td, vocab, dim, xd));
    }
}
