using System.Runtime.Intrinsics;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The pieces of the CPU sample and verify kernels: the vectorised Philox (bit-identical to the scalar generator),
/// the 8-lane exp and log against double, the chunked race against a plain scalar race, and the row teams: a
/// kernel's outputs must be bit-identical for every thread count (rows split over the workers or not, at vocabulary
/// sizes that leave a partial chunk and a partial vector).
/// </summary>
public class CpuRowKernelTests
{
    [Test]
    public void VectorPhiloxEqualsTheScalarGenerator([Values(0, 1, 7, 8, 15, 16, 17, 1003)] int length, [Values(1, 2, 3)] int seed)
    {
        var rng = new System.Random(seed);
        var p = SamplingParams.Random(1f, (ulong)rng.NextInt64(), (uint)rng.Next(), rng.Next(100_000));
        uint stream = (uint)rng.Next(20);
        foreach (uint first in new[] { 0u, (uint)rng.Next(), uint.MaxValue - 9u }) // the last wraps around 2^32
        {
            var u = new float[length];
            CpuPhilox.Uniforms(p, p.Position, stream, first, u);
            for (int j = 0; j < length; j++)
                Assert.That(u[j], Is.EqualTo(Philox.Uniform(p.SeedLo, p.SeedHi, p.Position, p.SampleId, stream, unchecked(first + (uint)j))), $"index {first} + {j}");
        }
    }

    [Test]
    public void ExpAndLogAreWithinAFewUlps()
    {
        var rng = new System.Random(5);
        var t = new float[8];
        for (int trial = 0; trial < 2000; trial++)
        {
            for (int j = 0; j < 8; j++) t[j] = -87f * (float)rng.NextDouble();
            var e = CpuRowMath.Exp(Vector256.Create(t));
            var term = CpuRowMath.ExpTerm(Vector256.Create(t));
            for (int j = 0; j < 8; j++)
            {
                Assert.That(Math.Abs(e[j] - Math.Exp(t[j])), Is.LessThanOrEqualTo(2.5e-7 * Math.Exp(t[j])), $"exp {t[j]}");
                Assert.That(term[j], Is.EqualTo(e[j]), $"exp term {t[j]}");
            }
        }
        foreach (float below in new[] { -87.01f, -100f, -1e30f, float.NegativeInfinity })
        {
            Assert.That(CpuRowMath.Exp(Vector256.Create(below)).ToScalar(), Is.EqualTo(0f), $"exp {below}");
            Assert.That(CpuRowMath.ExpTerm(Vector256.Create(below)).ToScalar(), Is.EqualTo(MathF.Exp(-87f)).Within(1e-44f), $"exp term {below}");
        }
        for (int k = 1; k < 1 << 24; k += 4099)
        {
            float x = (2 * k + 1) / 16777216f * 0.5f; // uniforms across (0, 1)
            float l = CpuRowMath.Log(Vector256.Create(x)).ToScalar();
            Assert.That(l, Is.EqualTo(Math.Log(x)).Within(Math.Abs(Math.Log(x)) * 3e-7 + 1e-12), $"ln {x}");
        }
        float nearOne = 1f - 1f / 16777216f;
        Assert.That(CpuRowMath.Log(Vector256.Create(nearOne)).ToScalar(), Is.EqualTo(Math.Log(nearOne)).Within(-Math.Log(nearOne) * 3e-7));
        Assert.That(CpuRowMath.Exp(Vector256.Create(float.NegativeInfinity)).ToScalar(), Is.EqualTo(0f));
        Assert.That(CpuRowMath.Exp(Vector256<float>.Zero).ToScalar(), Is.EqualTo(1f));
    }

    [Test]
    public unsafe void RaceMatchesAScalarRace([Values(1, 9, 16, 17, 1000, 8195)] int n, [Values(1, 2)] int seed)
    {
        var rng = new System.Random(seed * 31 + n);
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = rng.Next(4) == 0 ? 0f : (float)rng.NextDouble() * (rng.Next(10) == 0 ? 1e-30f : 1f);
        var p = SamplingParams.Random(1f, (ulong)rng.NextInt64(), 3, 77);
        int first = rng.Next(1000);
        int expected = -1;
        double best = -1;
        for (int i = 0; i < n; i++)
        {
            if (!(w[i] > 0f)) continue;
            double score = w[i] / -Math.Log(Philox.Uniform(p.SeedLo, p.SeedHi, 77, 3, 0, (uint)(first + i)));
            if (score > best) { best = score; expected = first + i; }
        }
        fixed (float* wp = w)
        {
            var (score, index) = CpuRowMath.Race(wp, n, first, p, 77, 0);
            Assert.That(index, Is.EqualTo(expected));
            if (expected >= 0) Assert.That(score, Is.EqualTo(best).Within(best * 1e-6));
        }
        var zeros = new float[n];
        fixed (float* zp = zeros) Assert.That(CpuRowMath.Race(zp, n, first, p, 77, 0).Index, Is.EqualTo(-1));
    }

    /// <summary>The row max against a plain loop: NaN anywhere gives NaN (also beside +∞ and −∞), else the max, at
    /// lengths with and without a partial vector, with ±∞ and all −∞.</summary>
    [Test]
    public unsafe void MaxIsThePlainMaxAndFindsNaN([Values(1, 7, 16, 17, 100, 8192)] int n, [Values(1, 2, 3)] int seed)
    {
        var rng = new System.Random(seed * 101 + n);
        for (int trial = 0; trial < 40; trial++)
        {
            var x = new float[n];
            for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 20 - 10);
            switch (trial % 5)
            {
                case 1: x[rng.Next(n)] = float.NaN; break;
                case 2: x[rng.Next(n)] = float.PositiveInfinity; x[rng.Next(n)] = float.NegativeInfinity; break;
                case 3: x[rng.Next(n)] = float.PositiveInfinity; x[rng.Next(n)] = float.NegativeInfinity; x[rng.Next(n)] = float.NaN; break;
                case 4: Array.Fill(x, float.NegativeInfinity); break;
            }
            float expected = float.NegativeInfinity;
            foreach (float v in x) expected = float.IsNaN(v) || float.IsNaN(expected) ? float.NaN : Math.Max(expected, v);
            fixed (float* xp = x)
            {
                float max = CpuRowMath.Max(xp, n);
                // A row with +∞ is not finite whatever else it holds: +∞ beside −∞ may come back as NaN.
                if (float.IsPositiveInfinity(expected)) Assert.That(float.IsPositiveInfinity(max) || float.IsNaN(max), $"trial {trial}: {max}");
                else Assert.That(max, Is.EqualTo(expected), $"trial {trial}");
            }
        }
    }

    /// <summary>The one-pass max and exp-sum against double: the max exactly, the sum within float rounding, at lengths
    /// around the 64-value block, with masked (−∞) values, all −∞, NaN and +∞, and temperatures.</summary>
    [Test]
    public unsafe void MaxExpSumIsTheMaxAndTheSumOfExps([Values(1, 63, 64, 65, 1000, 8192)] int n, [Values(0.4f, 1f)] float temperature, [Values(1, 2)] int seed)
    {
        var rng = new System.Random(seed * 211 + n);
        for (int trial = 0; trial < 12; trial++)
        {
            var x = new float[n];
            // Rising values make the running max climb often: every rescale is exercised.
            for (int i = 0; i < n; i++) x[i] = trial % 3 == 0 ? i * 0.01f + (float)rng.NextDouble() : (float)(rng.NextDouble() * 30 - 15);
            for (int i = 0; i < n; i++) if (rng.Next(5) == 0) x[i] = float.NegativeInfinity;
            switch (trial % 6)
            {
                case 1: Array.Fill(x, float.NegativeInfinity); break;
                case 2: x[rng.Next(n)] = float.NaN; break;
                case 4: x[rng.Next(n)] = float.PositiveInfinity; break;
            }
            double expectedMax = double.NegativeInfinity;
            bool nan = false;
            foreach (float v in x) { nan |= float.IsNaN(v); if (!float.IsNaN(v)) expectedMax = Math.Max(expectedMax, v); }
            float max;
            float sum;
            fixed (float* xp = x) sum = CpuRowMath.MaxExpSum(xp, n, 1f / temperature, out max);
            if (nan || double.IsPositiveInfinity(expectedMax))
            {
                Assert.That(float.IsNaN(max) || (!nan && float.IsPositiveInfinity(max)), $"trial {trial}: not finite, got {max}");
                continue;
            }
            Assert.That(max, Is.EqualTo((float)expectedMax), $"trial {trial}: max");
            double expectedSum = 0;
            if (!double.IsNegativeInfinity(expectedMax))
                foreach (float v in x) expectedSum += Math.Exp((v - expectedMax) / temperature);
            Assert.That(sum, Is.EqualTo(expectedSum).Within(expectedSum * 2e-6 + 1e-30), $"trial {trial}: sum");
        }
    }

    /// <summary>The race skips lanes that cannot win; where scores nearly tie it must still find the scalar race's winner.</summary>
    [Test]
    public unsafe void RaceFindsTheWinnerAmongNearTies([Values(1, 2, 3, 4)] int seed)
    {
        var rng = new System.Random(seed);
        const int n = 4099;
        var p = SamplingParams.Random(1f, (ulong)seed, 5, 9);
        var u = new float[n];
        CpuPhilox.Uniforms(p, 9, 0, 0, u);
        // Weights that make every score −w / ln U equal up to a few ulps: any skipped lane that should win shows.
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = (float)(-Math.Log(u[i]) * (1 + 1e-6 * rng.NextDouble()));
        int expected = -1;
        float best = -1f;
        for (int i = 0; i < n; i++)
        {
            float score = -(w[i] / CpuRowMath.Log(System.Runtime.Intrinsics.Vector256.Create(u[i])).ToScalar());
            if (score > best) { best = score; expected = i; }
        }
        fixed (float* wp = w) Assert.That(CpuRowMath.Race(wp, n, 0, p, 9, 0).Index, Is.EqualTo(expected));
    }

    /// <summary>Vocabularies: a partial last chunk and vector (3 · 8192 + 5), an odd one, the Qwen one; sample counts
    /// that make the backend split rows over a team (fewer than 2 per worker) or give each worker whole samples.</summary>
    [TestCase(24581, 1, 1)]
    [TestCase(24581, 5, 2)]
    [TestCase(100003, 2, 3)]
    [TestCase(151936, 1, 4)]
    public void VerifyIsTheSameForEveryThreadCount(int vocab, int samples, int seed)
    {
        var c = VerifyCase.Random(new System.Random(seed), samples, vocab, maxNodes: 5);
        VerifyCase.Result? first = null;
        foreach (int threads in new[] { 1, 2, 3, 4 })
        {
            using var backend = new CpuBackend(threads);
            var r = c.Run(backend);
            if (first == null)
            {
                first = r;
                var reference = c.RunReference();
                Assert.That(r.AcceptedNodes, Is.EqualTo(reference.AcceptedNodes), "paths, against the reference");
                Assert.That(r.NextToken, Is.EqualTo(reference.NextToken), "next tokens, against the reference");
                continue;
            }
            Assert.That(r.AcceptedCount, Is.EqualTo(first.AcceptedCount), $"{threads} threads");
            Assert.That(r.AcceptedNodes, Is.EqualTo(first.AcceptedNodes), $"{threads} threads");
            Assert.That(r.NextToken, Is.EqualTo(first.NextToken), $"{threads} threads");
            Assert.That(r.LogProbs, Is.EqualTo(first.LogProbs), $"{threads} threads: log-probs bit for bit");
        }
    }

    [TestCase(24581, 1, 1)]
    [TestCase(24581, 7, 2)]
    [TestCase(151936, 2, 3)]
    public void SampleIsTheSameForEveryThreadCount(int vocab, int rows, int seed)
    {
        var rng = new System.Random(seed);
        var logits = SamplingTestData.Logits(rng, rows, vocab);
        var settings = Enumerable.Range(0, rows).Select(r => SamplingTestData.Params(rng, vocab, (uint)r, rng.Next(100))).ToArray();
        (int[] Tokens, float[] LogProbs)? first = null;
        foreach (int threads in new[] { 1, 2, 3, 4 })
        {
            using var backend = new CpuBackend(threads);
            var r = SampleTests.Run(backend, settings, logits, vocab);
            if (first is not { } f)
            {
                first = r;
                Assert.That(r.Tokens, Is.EqualTo(SampleTests.RunReference(settings, logits, vocab).Tokens), "against the reference");
                continue;
            }
            Assert.That(r.Tokens, Is.EqualTo(f.Tokens), $"{threads} threads");
            Assert.That(r.LogProbs, Is.EqualTo(f.LogProbs), $"{threads} threads: log-probs bit for bit");
        }
    }
}
