using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The sample kernel against <see cref="ReferenceSampler"/> on CPU and Vulkan. Tokens must be equal (greedy
/// exactly; sampled: the exponential race is compared in float on the backends and in double in the reference, so
/// a token may only differ when two race scores agree to ~1e-7 relative — none were observed, and the test allows
/// none); logProbs within 1e-4 absolute.
/// </summary>
public class SampleTests
{
    private const float LogProbTolerance = 1e-4f;

    internal static (int[] Tokens, float[] LogProbs) Run(ComputeBackend backend, SamplingParams[] rows, float[] logits, int vocab)
    {
        using var buffer = backend.Allocate<float>(logits.Length, "logits");
        buffer.Write(logits);
        var tokens = new int[rows.Length];
        var logProbs = new float[rows.Length];
        backend.Sample(rows, buffer, vocab, tokens, logProbs);
        return (tokens, logProbs);
    }

    internal static (int[] Tokens, float[] LogProbs) RunReference(SamplingParams[] rows, float[] logits, int vocab)
    {
        var tokens = new int[rows.Length];
        var logProbs = new float[rows.Length];
        ReferenceSampler.Sample(rows, logits, vocab, tokens, logProbs);
        return (tokens, logProbs);
    }

    [Test]
    public void MatchesReference(
        [Values("cpu", "vulkan")] string backendName,
        [Values(7, 1000, 32001)] int vocab,
        [Values(1, 13)] int rows,
        [Values(1, 2, 3)] int seed) =>
        CheckAgainstReference(backendName, vocab, rows, seed);

    [TestCase("cpu", 50257, 8, 11)]
    [TestCase("cpu", 151936, 4, 12)]
    [TestCase("cpu", 1000, 256, 13)]
    [TestCase("cpu", 151936, 48, 14)]
    [TestCase("vulkan", 50257, 4, 21)]
    [TestCase("vulkan", 151936, 2, 22)]
    [TestCase("vulkan", 1000, 256, 23)]
    public void MatchesReferenceLarge(string backendName, int vocab, int rows, int seed) =>
        CheckAgainstReference(backendName, vocab, rows, seed);

    private static void CheckAgainstReference(string backendName, int vocab, int rows, int seed)
    {
        var backend = Backends.Get(backendName);
        var rng = new System.Random(seed * 7919 + vocab + rows);
        var logits = SamplingTestData.Logits(rng, rows, vocab);
        var settings = Enumerable.Range(0, rows).Select(r => SamplingTestData.Params(rng, vocab, (uint)rng.Next(), rng.Next(4096))).ToArray();
        var (tokens, logProbs) = Run(backend, settings, logits, vocab);
        var (expectedTokens, expectedLogProbs) = RunReference(settings, logits, vocab);
        for (int r = 0; r < rows; r++)
        {
            var p = settings[r];
            Assert.That(tokens[r], Is.EqualTo(expectedTokens[r]),
                $"row {r}: T={p.Temperature} topK={p.TopK} topP={p.TopP}");
            Assert.That(logProbs[r], Is.EqualTo(expectedLogProbs[r]).Within(LogProbTolerance), $"row {r} logProb");
        }
    }

    /// <summary>230 rows of vocab 151936 are 140 MB of logits, over lavapipe's 128 MiB binding limit: the Vulkan
    /// kernel must split the rows over several dispatches and still match the CPU backend.</summary>
    [Test]
    public void RowsBeyondOneBindingAreSplitOverDispatches()
    {
        var vk = Backends.Vulkan;
        const int vocab = 151936, rows = 230;
        var rng = new System.Random(3);
        var logits = new float[(long)rows * vocab];
        for (long i = 0; i < logits.Length; i++) logits[i] = 8f * rng.NextSingle();
        var settings = Enumerable.Range(0, rows).Select(r => SamplingParams.Random(r % 3 == 0 ? 0f : 1f, (ulong)r, (uint)r, r)).ToArray();
        long dispatches = vk.Dispatches;
        var gpu = Run(vk, settings, logits, vocab);
        Assert.That(vk.Dispatches - dispatches, Is.GreaterThan(1), "expected the rows to be split");
        // A row's token does not depend on the batch, so the CPU checks the first rows and those around the split.
        int[] check = [0, 1, 2, .. Enumerable.Range(rows - 14, 14)];
        var cpu = Run(Backends.Cpu, check.Select(r => settings[r]).ToArray(), check.SelectMany(r => logits[(r * vocab)..((r + 1) * vocab)]).ToArray(), vocab);
        Assert.That(check.Select(r => gpu.Tokens[r]), Is.EqualTo(cpu.Tokens));
        Assert.That(check.Select(r => gpu.LogProbs[r]), Is.EqualTo(cpu.LogProbs).Within(LogProbTolerance));
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void GreedyTakesLowestIndexOnTies(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 300;
        var logits = new float[2 * vocab];
        Array.Fill(logits, -1f);
        logits[17] = 5f; logits[200] = 5f; logits[250] = 5f;
        logits[vocab + 3] = 0f; logits[vocab + 4] = -0f; // ±0 as the max tie too
        for (int i = 5; i < vocab; i++) logits[vocab + i] = -2f;
        logits[vocab + 0] = -0f; logits[vocab + 1] = -3f; logits[vocab + 2] = float.NegativeInfinity;
        var rows = new[] { SamplingParams.Greedy(0, 0), SamplingParams.Greedy(1, 0) };
        var (tokens, logProbs) = Run(backend, rows, logits, vocab);
        Assert.That(tokens, Is.EqualTo(new[] { 17, 0 }));
        var (_, expected) = RunReference(rows, logits, vocab);
        Assert.That(logProbs, Is.EqualTo(expected).Within(LogProbTolerance));
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void SameSeedSameTokenAndBatchCompositionDoesNotMatter(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 5003, rows = 24;
        var rng = new System.Random(99);
        var logits = SamplingTestData.Logits(rng, rows, vocab, scale: 1f);
        var settings = Enumerable.Range(0, rows).Select(r => SamplingTestData.Params(rng, vocab, (uint)r, 10 + r)).ToArray();
        var first = Run(backend, settings, logits, vocab);
        var second = Run(backend, settings, logits, vocab);
        Assert.That(second.Tokens, Is.EqualTo(first.Tokens));
        Assert.That(second.LogProbs, Is.EqualTo(first.LogProbs));

        // Row 5 alone, and rows 5.. in reverse order: every row keeps its token.
        var alone = Run(backend, settings[5..6], logits[(5 * vocab)..(6 * vocab)], vocab);
        Assert.That(alone.Tokens[0], Is.EqualTo(first.Tokens[5]));
        var order = Enumerable.Range(5, rows - 5).Reverse().ToArray();
        var shuffledLogits = order.SelectMany(r => logits[(r * vocab)..((r + 1) * vocab)]).ToArray();
        var shuffled = Run(backend, order.Select(r => settings[r]).ToArray(), shuffledLogits, vocab);
        for (int i = 0; i < order.Length; i++) Assert.That(shuffled.Tokens[i], Is.EqualTo(first.Tokens[order[i]]));

        // A different seed changes (with overwhelming probability) some of the sampled tokens.
        var reseeded = settings.Select(p => { p.Seed ^= 0x5555; return p; }).ToArray();
        var third = Run(backend, reseeded, logits, vocab);
        Assert.That(third.Tokens.Where((t, r) => !settings[r].IsGreedy && t != first.Tokens[r]).Count(), Is.GreaterThan(0));
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void TopKOneIsArgmaxAndMaskedTokensAreNeverSampled(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 64, rows = 200;
        var rng = new System.Random(5);
        var logits = SamplingTestData.Logits(rng, rows, vocab, scale: 0.5f, masked: false);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < vocab; i += 2) logits[r * vocab + i] = float.NegativeInfinity;
        var settings = Enumerable.Range(0, rows).Select(r => SamplingParams.Random(1.7f, (ulong)r, (uint)r, 0, topK: r % 2 == 0 ? 1 : 0)).ToArray();
        var (tokens, _) = Run(backend, settings, logits, vocab);
        for (int r = 0; r < rows; r++)
        {
            Assert.That(tokens[r] % 2, Is.EqualTo(1), $"row {r} sampled a masked token");
            if (r % 2 == 0) Assert.That(tokens[r], Is.EqualTo(ReferenceSampler.Argmax(logits.AsSpan(r * vocab, vocab))));
        }
    }

    [TestCase("cpu", float.NaN)]
    [TestCase("cpu", float.PositiveInfinity)]
    [TestCase("vulkan", float.NaN)]
    [TestCase("vulkan", float.PositiveInfinity)]
    public void BadLogitsNameTheArgumentAndRow(string backendName, float bad)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 100;
        var logits = SamplingTestData.Logits(new System.Random(1), 4, vocab, masked: false);
        logits[2 * vocab + 37] = bad;
        var rows = Enumerable.Range(0, 4).Select(r => SamplingParams.Random(1f, 1, (uint)r, 0)).ToArray();
        var e = Assert.Throws<ArgumentException>(() => Run(backend, rows, logits, vocab));
        Assert.That(e!.ParamName, Is.EqualTo("logits"));
        Assert.That(e.Message, Does.Contain("row 2"));

        rows[2] = SamplingParams.Greedy(2, 0);
        e = Assert.Throws<ArgumentException>(() => Run(backend, rows, logits, vocab));
        Assert.That(e!.ParamName, Is.EqualTo("logits"));

        logits[2 * vocab + 37] = 0f;
        logits.AsSpan(vocab, vocab).Fill(float.NegativeInfinity);
        e = Assert.Throws<ArgumentException>(() => Run(backend, rows, logits, vocab));
        Assert.That(e!.ParamName, Is.EqualTo("logits"));
        Assert.That(e.Message, Does.Contain("row 1").And.Contain("no finite"));
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void BadArgumentsNameTheArgument(string backendName)
    {
        var backend = Backends.Get(backendName);
        using var logits = backend.Allocate<float>(40, "logits");
        var rows = new[] { SamplingParams.Random(1f, 1, 0, 0), SamplingParams.Random(1f, 1, 1, 0) };
        Assert.That(Throws(() => backend.Sample(rows, logits, 0, new int[2], new float[2])), Is.EqualTo("vocabSize"));
        Assert.That(Throws(() => backend.Sample(rows, logits, 21, new int[2], new float[2])), Is.EqualTo("logits"));
        Assert.That(Throws(() => backend.Sample(rows, logits, 20, new int[1], new float[2])), Is.EqualTo("tokens"));
        Assert.That(Throws(() => backend.Sample(rows, logits, 20, new int[2], new float[3])), Is.EqualTo("logProbs"));
        var negative = rows.ToArray();
        negative[1].Temperature = -1f;
        Assert.That(Throws(() => backend.Sample(negative, logits, 20, new int[2], new float[2])), Is.EqualTo("rows"));
        var badTopP = rows.ToArray();
        badTopP[0].TopP = float.NaN;
        Assert.That(Throws(() => backend.Sample(badTopP, logits, 20, new int[2], new float[2])), Is.EqualTo("rows"));
        using var foreign = (backendName == "cpu" ? Backends.Vulkan : (ComputeBackend)Backends.Cpu).Allocate<float>(40, "foreign");
        Assert.That(Throws(() => backend.Sample(rows, foreign, 20, new int[2], new float[2])), Is.EqualTo("logits"));
    }

    private static string? Throws(Action call) => Assert.Throws(Is.InstanceOf<ArgumentException>(), call) is ArgumentException e ? e.ParamName : null;
}
