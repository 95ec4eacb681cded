using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The top-tokens kernel (what a draft tree expands) against <see cref="ReferenceTopTokens"/> on CPU and Vulkan.
/// Tokens must be equal; probabilities equal bit for bit on the CPU backend (it sums in double in token order, so draft
/// trees do not change) and within 1e-5 relative on Vulkan (its denominator is summed in float). Random rows have
/// distinct logits; exact ties, −Inf and underflowing tokens, short vocabularies, bad rows and the host fallback for
/// truncated rows have cases of their own.
/// </summary>
public class TopTokensTests
{
    private const double RelativeTolerance = 1e-5;

    internal static (int[] Tokens, double[] Probabilities) Run(ComputeBackend backend, SamplingParams[] settings, float[] logits, int[] rows, int vocab, int count)
    {
        using var buffer = backend.Allocate<float>(logits.Length, "logits");
        buffer.Write(logits);
        var tokens = new int[rows.Length * count];
        var probabilities = new double[rows.Length * count];
        backend.TopTokens(settings, buffer, rows, vocab, count, tokens, probabilities);
        return (tokens, probabilities);
    }

    /// <summary>The reference's answer laid out as the kernel's: [rows, count], −1 / 0 past each row's tokens.</summary>
    internal static (int[] Tokens, double[] Probabilities) RunReference(SamplingParams[] settings, float[] logits, int[] rows, int vocab, int count)
    {
        var tokens = Enumerable.Repeat(-1, rows.Length * count).ToArray();
        var probabilities = new double[rows.Length * count];
        for (int r = 0; r < rows.Length; r++)
        {
            var top = ReferenceTopTokens.TopTokens(logits.AsSpan(rows[r] * vocab, vocab), settings[r], count);
            for (int j = 0; j < top.Count; j++) (tokens[r * count + j], probabilities[r * count + j]) = top[j];
        }
        return (tokens, probabilities);
    }

    /// <summary>[rows, vocab] distinct logits in about ±6 (a shuffled ladder), with a few −Inf in some rows.</summary>
    private static float[] DistinctLogits(Random random, int rows, int vocab)
    {
        var logits = new float[rows * vocab];
        for (int r = 0; r < rows; r++)
        {
            var ladder = Enumerable.Range(0, vocab).OrderBy(_ => random.Next()).ToArray();
            for (int i = 0; i < vocab; i++) logits[r * vocab + i] = (ladder[i] - vocab / 2) * (12f / vocab) + 0.1f;
            if (r % 3 == 1)
                for (int m = 0; m < Math.Min(4, vocab / 4); m++) logits[r * vocab + random.Next(vocab)] = float.NegativeInfinity;
        }
        return logits;
    }

    private static void AssertMatches(ComputeBackend backend, (int[] Tokens, double[] Probabilities) actual, (int[] Tokens, double[] Probabilities) expected, string what)
    {
        Assert.That(actual.Tokens, Is.EqualTo(expected.Tokens), $"{what}: tokens");
        if (backend.Info.Kind == DeviceKind.Cpu)
        {
            Assert.That(actual.Probabilities, Is.EqualTo(expected.Probabilities), $"{what}: the CPU backend's probabilities are the reference's bits");
            return;
        }
        for (int i = 0; i < expected.Probabilities.Length; i++)
            Assert.That(actual.Probabilities[i], Is.EqualTo(expected.Probabilities[i]).Within(RelativeTolerance * expected.Probabilities[i]), $"{what}: probability {i}");
    }

    [Test]
    public void MatchesReference(
        [Values("cpu", "vulkan")] string backendName,
        [Values(16, 37, 1000, 4099, 32768)] int vocab,
        [Values(1, 2, 5, 8)] int count,
        [Values(0f, 0.7f, 1f, 1.5f)] float temperature)
    {
        var backend = Backends.Get(backendName);
        foreach (int seed in new[] { 1, 2 })
        {
            var random = new Random(seed * 7919 + vocab * 31 + count * 7 + (int)(temperature * 10));
            int bufferRows = 2 + random.Next(6), requests = 1 + random.Next(9);
            var logits = DistinctLogits(random, bufferRows, vocab);
            // Rows in any order, some requested twice.
            var rows = Enumerable.Range(0, requests).Select(_ => random.Next(bufferRows)).ToArray();
            var settings = rows.Select((_, r) => temperature == 0 ? SamplingParams.Greedy((uint)r, r) : SamplingParams.Random(temperature, (ulong)seed, (uint)r, r)).ToArray();
            AssertMatches(backend, Run(backend, settings, logits, rows, vocab, count), RunReference(settings, logits, rows, vocab, count), $"seed {seed}");
        }
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void Exact_ties_list_the_lowest_token_first(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 1000, count = 6;
        var logits = new float[3 * vocab];
        // Row 0: a tie of four at the top, spread over threads, then a tie of two; row 1: all equal; row 2: ±0 tie.
        Array.Fill(logits, -3f);
        foreach (int t in new[] { 999, 3, 400, 401 }) logits[t] = 2f;
        logits[700] = 1f; logits[20] = 1f;
        Array.Fill(logits, 0.5f, vocab, vocab);
        Array.Fill(logits, -1f, 2 * vocab, vocab);
        logits[2 * vocab + 900] = 0f; logits[2 * vocab + 10] = -0f;
        int[] rows = [0, 1, 2];
        var settings = new[] { SamplingParams.Greedy(0, 0), SamplingParams.Random(0.7f, 1, 1, 0), SamplingParams.Random(1.3f, 1, 2, 0) };
        var actual = Run(backend, settings, logits, rows, vocab, count);
        Assert.That(actual.Tokens, Is.EqualTo(new[] { 3, 400, 401, 999, 20, 700, 0, 1, 2, 3, 4, 5, 10, 900, 0, 1, 2, 3 }));
        AssertMatches(backend, actual, RunReference(settings, logits, rows, vocab, count), "ties");
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void Zero_probability_tokens_are_left_out(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 300, count = 5;
        var logits = Enumerable.Repeat(float.NegativeInfinity, 2 * vocab).ToArray();
        // Row 0: two finite tokens; row 1: a token whose probability underflows in double (e^-1000) and one that does not in double but would in float (e^-200).
        logits[7] = 1f; logits[250] = 2f;
        logits[vocab + 5] = 0f; logits[vocab + 6] = -1000f; logits[vocab + 100] = -200f;
        int[] rows = [0, 1];
        var settings = new[] { SamplingParams.Greedy(0, 0), SamplingParams.Random(1f, 1, 1, 0) };
        var actual = Run(backend, settings, logits, rows, vocab, count);
        Assert.That(actual.Tokens, Is.EqualTo(new[] { 250, 7, -1, -1, -1, 5, 100, -1, -1, -1 }));
        Assert.That(actual.Probabilities.Where((_, i) => actual.Tokens[i] < 0), Is.All.Zero);
        AssertMatches(backend, actual, RunReference(settings, logits, rows, vocab, count), "zero probabilities");
    }

    [Test]
    public void A_vocabulary_smaller_than_count_lists_every_token([Values("cpu", "vulkan")] string backendName, [Values(1, 3)] int vocab)
    {
        var backend = Backends.Get(backendName);
        var random = new Random(vocab);
        var logits = DistinctLogits(random, 2, vocab);
        int[] rows = [1, 0];
        var settings = new[] { SamplingParams.Greedy(0, 0), SamplingParams.Random(0.7f, 1, 1, 0) };
        var actual = Run(backend, settings, logits, rows, vocab, 8);
        Assert.That(actual.Tokens.Count(t => t >= 0), Is.EqualTo(2 * vocab));
        AssertMatches(backend, actual, RunReference(settings, logits, rows, vocab, 8), "short vocabulary");
    }

    /// <summary>Rows that top-k or top-p truncates, and counts beyond the device kernel's, go through the host path, mixed with device rows.</summary>
    [Test]
    public void Truncated_rows_and_large_counts_match_the_reference([Values("cpu", "vulkan")] string backendName, [Values(4, 20)] int count, [Values(1, 2)] int seed)
    {
        var backend = Backends.Get(backendName);
        var random = new Random(seed);
        const int vocab = 777, bufferRows = 6;
        var logits = DistinctLogits(random, bufferRows, vocab);
        var rows = Enumerable.Range(0, 12).Select(_ => random.Next(bufferRows)).ToArray();
        var settings = rows.Select((_, r) => SamplingTestData.Params(random, vocab, (uint)r, r)).ToArray();
        Assert.That(settings.Count(p => TopTokenRows.Truncates(p, vocab)), Is.InRange(1, rows.Length - 1), "a mix of truncated and untruncated rows");
        AssertMatches(backend, Run(backend, settings, logits, rows, vocab, count), RunReference(settings, logits, rows, vocab, count), "truncated");
    }

    /// <summary>Rows 0 and 229 of vocab 151936 are 140 MB apart, over lavapipe's 128 MiB binding limit: two dispatches.</summary>
    [Test]
    public void Rows_farther_apart_than_one_binding_are_split_over_dispatches()
    {
        var vk = Backends.Vulkan;
        const int vocab = 151936, bufferRows = 230;
        var random = new Random(5);
        var logits = new float[(long)bufferRows * vocab];
        for (long i = 0; i < logits.Length; i++) logits[i] = 8f * random.NextSingle();
        int[] rows = [229, 0, 228, 1];
        var settings = rows.Select((_, r) => SamplingParams.Random(1f, 1, (uint)r, 0)).ToArray();
        long dispatches = vk.Dispatches;
        var actual = Run(vk, settings, logits, rows, vocab, 3);
        Assert.That(vk.Dispatches - dispatches, Is.GreaterThan(1), "expected the rows to be split");
        AssertMatches(vk, actual, RunReference(settings, logits, rows, vocab, 3), "split");
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void Bad_rows_and_bad_input_are_refused(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 64;
        var logits = new float[3 * vocab];
        logits[vocab + 9] = float.NaN;
        Array.Fill(logits, float.NegativeInfinity, 2 * vocab, vocab);
        var greedy = new[] { SamplingParams.Greedy(0, 0) };
        var nan = Assert.Throws<ArgumentException>(() => Run(backend, greedy, logits, [1], vocab, 2))!;
        Assert.That(nan.ParamName, Is.EqualTo("logits"));
        Assert.That(nan.Message, Does.Contain("row 1").And.Contain("NaN"));
        var noFinite = Assert.Throws<ArgumentException>(() => Run(backend, [SamplingParams.Random(1f, 1, 0, 0, topP: 0.5f)], logits, [2], vocab, 2))!;
        Assert.That(noFinite.Message, Does.Contain("row 2").And.Contain("no finite"));
        Assert.That(Assert.Throws<ArgumentException>(() => Run(backend, greedy, logits, [0, 0], vocab, 2))!.ParamName, Is.EqualTo("settings"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Run(backend, greedy, logits, [3], vocab, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Run(backend, greedy, logits, [0], vocab, 0));
    }
}
