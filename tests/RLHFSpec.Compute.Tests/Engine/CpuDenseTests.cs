using RLHFSpec.Compute.Engine.Cpu;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The managed dense kernels (<see cref="CpuDense"/>) against double-precision references written here, on random
/// inputs across shapes (dimensions around the 8-lane and 4-row block edges, partial row and column ranges) and
/// seeds; batch invariance bit for bit; and the <see cref="CpuWorkers"/> pool (barriers, failures, callers on
/// several threads). Tolerance: |got − want| ≤ 1e-5·(1 + Σ|terms|) for float32 accumulation.
/// </summary>
public sealed unsafe class CpuDenseTests
{
    private static float[] RandomArray(Random r, int n, double scale = 1) => Enumerable.Range(0, n).Select(_ => (float)((r.NextDouble() * 2 - 1) * scale)).ToArray();

    public static IEnumerable<TestCaseData> ProjectShapes()
    {
        int seed = 0;
        foreach (var (tokens, inDim, outDim) in new[] { (1, 1, 1), (1, 8, 4), (3, 7, 5), (4, 16, 8), (5, 33, 13), (7, 40, 12), (8, 24, 9), (9, 64, 19), (10, 17, 5), (16, 40, 36), (2, 129, 3), (37, 24, 9), (70, 17, 6) })
            foreach (bool bias in new[] { false, true })
                foreach (bool accumulate in new[] { false, true })
                {
                    ++seed;
                    foreach (int group in new[] { 3, 4 }) yield return new TestCaseData(tokens, inDim, outDim, bias, accumulate, seed, group);
                }
    }

    [TestCaseSource(nameof(ProjectShapes))]
    public void Project_matches_the_reference_on_every_row_range(int tokens, int inDim, int outDim, bool bias, bool accumulate, int seed, int group)
    {
        var r = new Random(seed);
        var x = RandomArray(r, tokens * inDim);
        var w = RandomArray(r, outDim * inDim);
        var b = bias ? RandomArray(r, outDim) : null;
        int stride = outDim + 3;   // y wider than the output: columns outside [rowStart, rowEnd) must stay untouched
        var y0 = RandomArray(r, tokens * stride);
        int rowStart = r.Next(outDim), rowEnd = r.Next(rowStart + 1, outDim + 1);
        if (seed % 3 == 0) (rowStart, rowEnd) = (0, outDim);
        var y = (float[])y0.Clone();
        fixed (float* px = x, pw = w, pb = b, py = y)
            CpuDense.Project(px, tokens, inDim, pw, pb, py, stride, rowStart, rowEnd, accumulate, group);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < stride; c++)
            {
                float got = y[t * stride + c];
                if (c < rowStart || c >= rowEnd)
                {
                    Assert.That(got, Is.EqualTo(y0[t * stride + c]), $"column {c} outside the range was written");
                    continue;
                }
                double want = 0, mag = 0;
                for (int i = 0; i < inDim; i++)
                {
                    want += (double)x[t * inDim + i] * w[c * inDim + i];
                    mag += Math.Abs((double)x[t * inDim + i] * w[c * inDim + i]);
                }
                if (b != null) { want += b[c]; mag += Math.Abs(b[c]); }
                if (accumulate) { want += y0[t * stride + c]; mag += Math.Abs(y0[t * stride + c]); }
                Assert.That(got, Is.EqualTo(want).Within(1e-5 * (1 + mag)), $"token {t} row {c}");
            }
    }

    [TestCase(1, 24, 36, 4)]
    [TestCase(2, 64, 64, 4)]
    [TestCase(3, 71, 29, 4)]
    [TestCase(1, 24, 36, 3)]
    [TestCase(2, 64, 64, 3)]
    [TestCase(3, 71, 29, 3)]
    public void Project_is_batch_invariant_bit_for_bit(int seed, int inDim, int outDim, int group)
    {
        var r = new Random(seed);
        const int tokens = 43;   // 4x4 (4x3) blocks and a 4x1 tail in two token tiles
        var x = RandomArray(r, tokens * inDim);
        var w = RandomArray(r, outDim * inDim);
        var b = RandomArray(r, outDim);
        var all = new float[tokens * outDim];
        fixed (float* px = x, pw = w, pb = b, py = all) CpuDense.Project(px, tokens, inDim, pw, pb, py, outDim, 0, outDim, false, group);
        for (int t = 0; t < tokens; t++)
        {
            var one = new float[outDim];
            fixed (float* px = &x[t * inDim], pw = w, pb = b, py = one)
            {
                // Split the rows at an odd point too, so the 4-row and 1-row paths both compute some rows.
                int split = Math.Min(outDim, 1 + t % 5);
                CpuDense.Project(px, 1, inDim, pw, pb, py, outDim, 0, split, false);
                CpuDense.Project(px, 1, inDim, pw, pb, py, outDim, split, outDim, false);
            }
            for (int c = 0; c < outDim; c++)
                Assert.That(BitConverter.SingleToInt32Bits(one[c]), Is.EqualTo(BitConverter.SingleToInt32Bits(all[t * outDim + c])), $"token {t} row {c}");
        }
        // Calls of 2 to 9 tokens (a chain's verification at batch 1) go through the register blocks too, their leftover
        // tokens in passes of 2 (2 + 2 for a group and one token): the same bits.
        for (int n = 2; n <= 9; n++)
            for (int t = 0; t + n <= tokens; t += n)
            {
                var few = new float[n * outDim];
                fixed (float* px = &x[t * inDim], pw = w, pb = b, py = few) CpuDense.Project(px, n, inDim, pw, pb, py, outDim, 0, outDim, false, group);
                for (int i = 0; i < few.Length; i++)
                    Assert.That(BitConverter.SingleToInt32Bits(few[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(all[t * outDim + i])), $"{n} tokens from {t}, element {i}");
            }
    }

    [Test]
    public void Token_passes_cover_every_token_and_leave_no_single_token_pass_beside_others()
    {
        Span<int> sizes = stackalloc int[16];
        foreach (int group in new[] { 3, 4 })
            for (int tokens = 1; tokens <= 8 * group; tokens++)
            {
                int n = CpuDense.Passes(tokens, group, sizes);
                var passes = sizes[..n].ToArray();
                Assert.That(passes.Sum(), Is.EqualTo(tokens), $"{tokens} tokens in groups of {group}: [{string.Join(", ", passes)}]");
                Assert.That(passes, Has.All.InRange(1, group), $"{tokens} tokens in groups of {group}");
                if (tokens > 1) Assert.That(passes, Has.None.EqualTo(1), $"{tokens} tokens in groups of {group}: [{string.Join(", ", passes)}]");
                Assert.That(n, Is.LessThanOrEqualTo(tokens / group + 2), $"{tokens} tokens in groups of {group}");
            }
    }

    [TestCase(1, 7, 33, 9)]
    [TestCase(2, 43, 64, 21)]
    [TestCase(3, 100, 129, 12)]
    [TestCase(4, 5, 16, 4)]
    public void Project_gives_the_same_bits_with_3_and_4_token_register_blocks(int seed, int tokens, int inDim, int outDim)
    {
        // The block shape is chosen per CPU (4x3 without AVX-512): a checkpoint must decode to the same tokens on both.
        var r = new Random(seed);
        var x = RandomArray(r, tokens * inDim);
        var w = RandomArray(r, outDim * inDim);
        var b = RandomArray(r, outDim);
        var y0 = RandomArray(r, tokens * outDim);
        var three = (float[])y0.Clone();
        var four = (float[])y0.Clone();
        fixed (float* px = x, pw = w, pb = b, p3 = three, p4 = four)
        {
            CpuDense.Project(px, tokens, inDim, pw, pb, p3, outDim, 0, outDim, true, 3);
            CpuDense.Project(px, tokens, inDim, pw, pb, p4, outDim, 0, outDim, true, 4);
        }
        Assert.That(three.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(four.Select(BitConverter.SingleToInt32Bits)));
    }

    [TestCase(1, 1, 5)]
    [TestCase(2, 3, 8)]
    [TestCase(3, 6, 37)]
    [TestCase(4, 2, 128)]
    public void RmsNorm_matches_the_reference(int seed, int tokens, int dim)
    {
        var r = new Random(seed);
        var x = RandomArray(r, tokens * dim, 3);
        var w = RandomArray(r, dim);
        var y = new float[tokens * dim];
        const float eps = 1e-6f;
        int t0 = tokens > 1 ? 1 : 0;
        fixed (float* px = x, pw = w, py = y) CpuDense.RmsNorm(px, pw, eps, py, dim, t0, tokens);
        for (int t = 0; t < tokens; t++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[t * dim + i] * x[t * dim + i];
            double scale = 1 / Math.Sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++)
            {
                double want = t < t0 ? 0 : x[t * dim + i] * scale * w[i];
                Assert.That(y[t * dim + i], Is.EqualTo(want).Within(1e-5 * (1 + Math.Abs(want))), $"token {t} element {i}");
            }
        }
    }

    [TestCase(1, 8, 3, 10000.0)]
    [TestCase(2, 16, 4, 1e6)]
    [TestCase(3, 64, 2, 500000.0)]
    public void Rope_matches_the_reference_rotation(int seed, int headDim, int heads, double theta)
    {
        var r = new Random(seed);
        const int tokens = 5, maxPos = 300;
        int stride = heads * headDim;
        var x = RandomArray(r, tokens * stride);
        var positions = Enumerable.Range(0, tokens).Select(_ => r.Next(maxPos)).ToArray();
        var cos = new float[maxPos * headDim];
        var sin = new float[maxPos * headDim];
        CpuDense.RopeTable(headDim, theta, 0, 100, cos, sin);
        CpuDense.RopeTable(headDim, theta, 100, maxPos, cos, sin);   // built in two pieces, as the executor grows it
        var y = (float[])x.Clone();
        int h0 = heads > 1 ? 1 : 0;
        fixed (float* py = y, pc = cos, ps = sin)
        fixed (int* pp = positions)
            CpuDense.Rope(py, tokens, stride, headDim, h0, heads, pp, pc, ps);
        int half = headDim / 2;
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < headDim; i++)
                {
                    int at = t * stride + h * headDim;
                    if (h < h0)
                    {
                        Assert.That(y[at + i], Is.EqualTo(x[at + i]), "a head outside the range was rotated");
                        continue;
                    }
                    double angle = positions[t] * Math.Pow(theta, -2.0 * (i % half) / headDim);
                    double rotated = i < half ? -x[at + i + half] : x[at + i - half];
                    double want = x[at + i] * Math.Cos(angle) + rotated * Math.Sin(angle);
                    // float angle rounding: |Δangle| ≤ position·2⁻²⁴ relative, so allow 1e-4 at positions < 300
                    Assert.That(y[at + i], Is.EqualTo(want).Within(1e-4), $"token {t} head {h} element {i}");
                }
    }

    [TestCase(1, 2, 9)]
    [TestCase(2, 3, 40)]
    public void SiluMul_matches_the_reference(int seed, int tokens, int width)
    {
        var r = new Random(seed);
        var gate = RandomArray(r, tokens * width, 6);
        var up = RandomArray(r, tokens * width);
        var got = (float[])gate.Clone();
        int c0 = 2, c1 = width - 1;
        fixed (float* pg = got, pu = up) CpuDense.SiluMul(pg, pu, tokens, width, c0, c1);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < width; c++)
            {
                double g = gate[t * width + c];
                double want = c < c0 || c >= c1 ? g : g / (1 + Math.Exp(-g)) * up[t * width + c];
                Assert.That(got[t * width + c], Is.EqualTo(want).Within(1e-5 * (1 + Math.Abs(want))), $"token {t} column {c}");
            }
    }

    // An element's result does not depend on the column range it was computed in (a vector lane or the padded tail),
    // so a split over more or fewer workers gives the same bits; large magnitudes saturate the exp without NaN.
    [TestCase(3, 37), TestCase(4, 64)]
    public void SiluMul_gives_the_same_bits_over_any_column_range(int seed, int width)
    {
        var r = new Random(seed);
        var gate = RandomArray(r, width, 120);
        var up = RandomArray(r, width);
        var whole = (float[])gate.Clone();
        fixed (float* pg = whole, pu = up) CpuDense.SiluMul(pg, pu, 1, width, 0, width);
        for (int split = 1; split < width; split += 3)
        {
            var parts = (float[])gate.Clone();
            fixed (float* pg = parts, pu = up)
            {
                CpuDense.SiluMul(pg, pu, 1, width, 0, split);
                CpuDense.SiluMul(pg, pu, 1, width, split, width);
            }
            for (int c = 0; c < width; c++)
            {
                Assert.That(float.IsNaN(parts[c]), Is.False, $"column {c}: NaN from {gate[c]}");
                Assert.That(BitConverter.SingleToUInt32Bits(parts[c]), Is.EqualTo(BitConverter.SingleToUInt32Bits(whole[c])), $"column {c}, split at {split}");
            }
        }
    }

    /// <summary>Each participant adds its index to a slot, then after a barrier reads every slot: any lost barrier shows.</summary>
    private sealed class Rounds(CpuWorkers pool, int rounds) : IParallelWork
    {
        public readonly long[] Slots = new long[pool.Count];
        public long Checks;

        public void Execute(int index, int count)
        {
            for (int round = 1; round <= rounds; round++)
            {
                Slots[index] = round;
                pool.Barrier();
                for (int j = 0; j < count; j++)
                    if (Volatile.Read(ref Slots[j]) != round) throw new InvalidOperationException($"participant {index} saw slot {j} at {Slots[j]} in round {round}");
                Interlocked.Increment(ref Checks);
                pool.Barrier();
            }
        }
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void Workers_run_every_participant_and_barriers_hold(int threads)
    {
        using var pool = new CpuWorkers(threads);
        for (int region = 0; region < 50; region++)
        {
            var work = new Rounds(pool, 20);
            pool.Run(work);
            Assert.That(work.Checks, Is.EqualTo(20L * threads), $"region {region}");
        }
    }

    private sealed class Throwing(CpuWorkers pool) : IParallelWork
    {
        public void Execute(int index, int count)
        {
            pool.Barrier();
            if (index == count - 1) throw new ArithmeticException("participant failed");
        }
    }

    private sealed class Nested(CpuWorkers pool) : IParallelWork
    {
        public void Execute(int index, int count) => pool.Run(new Rounds(pool, 1));
    }

    [Test]
    public void A_failing_participant_is_rethrown_and_the_pool_runs_on()
    {
        using var pool = new CpuWorkers(2);
        var e = Assert.Throws<AggregateException>(() => pool.Run(new Throwing(pool)));
        Assert.That(e!.InnerException, Is.InstanceOf<ArithmeticException>());
        var work = new Rounds(pool, 5);
        pool.Run(work);
        Assert.That(work.Checks, Is.EqualTo(10));
        Assert.That(() => pool.Run(new Nested(pool)), Throws.Exception, "a region starting another region of its pool");
        pool.Run(work = new Rounds(pool, 3));
        Assert.That(work.Checks, Is.EqualTo(6));
    }

    [Test]
    public void Callers_on_several_threads_take_turns()
    {
        using var pool = new CpuWorkers(2);
        var failures = new System.Collections.Concurrent.ConcurrentBag<Exception>();
        long checks = 0;
        var threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            try
            {
                for (int i = 0; i < 40; i++)
                {
                    var work = new Rounds(pool, 10);
                    pool.Run(work);
                    Interlocked.Add(ref checks, work.Checks);
                }
            }
            catch (Exception e) { failures.Add(e); }
        })).ToArray();
        foreach (var t in threads) t.Start();
        Assert.That(threads.All(t => t.Join(TimeSpan.FromSeconds(60))), Is.True, "a caller hung");
        Assert.That(failures, Is.Empty);
        Assert.That(checks, Is.EqualTo(4L * 40 * 10 * 2));
    }
}
