using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The verify kernel: hand-built cases (all accepted + bonus, first rejected, empty draft, second branch of a deep
/// tree), seeded determinism, and CPU/Vulkan against <see cref="RLHFSpec.Compute.Engine.Reference.ReferenceVerifier"/>
/// on random trees. Paths and tokens must be equal; logProbs within 1e-4 absolute.
/// </summary>
public class VerifyTests
{
    private const float LogProbTolerance = 1e-4f;
    private const int V = 8;

    /// <summary>A row whose only finite logits are <paramref name="tokens"/> (0 each): the distribution is uniform on them.</summary>
    private static float[] Only(params int[] tokens)
    {
        var row = new float[V];
        Array.Fill(row, float.NegativeInfinity);
        foreach (int t in tokens) row[t] = 0f;
        return row;
    }

    /// <summary>A row with its maximum (10) at <paramref name="token"/>, other logits spread below.</summary>
    private static float[] Peak(int token)
    {
        var row = Enumerable.Range(0, V).Select(i => (float)(i % 3)).ToArray();
        row[token] = 10f;
        return row;
    }

    private static VerifyCase OneSample(int[] tokens, int[] parents, SamplingParams p, DraftKind kind, float[][] targetRows, float[][]? draftRows = null) => new()
    {
        NodeOffsets = [0, tokens.Length], DraftTokens = tokens, Parents = parents, Params = [p], Kinds = [kind], Vocab = V,
        Target = targetRows.SelectMany(r => r).ToArray(), Draft = draftRows?.SelectMany(r => r).ToArray(),
    };

    private static void AssertMatchesReference(VerifyCase c, VerifyCase.Result actual)
    {
        var expected = c.RunReference();
        Assert.That(actual.AcceptedCount, Is.EqualTo(expected.AcceptedCount), "accepted counts");
        for (int s = 0; s < c.Samples; s++)
        {
            Assert.That(actual.Path(c, s), Is.EqualTo(expected.Path(c, s)), $"sample {s}: accepted path");
            int rowBase = c.NodeOffsets[s] + s;
            for (int j = 0; j <= actual.AcceptedCount[s]; j++)
                Assert.That(actual.LogProbs[rowBase + j], Is.EqualTo(expected.LogProbs[rowBase + j]).Within(LogProbTolerance), $"sample {s}: logProb {j}");
        }
        Assert.That(actual.NextToken, Is.EqualTo(expected.NextToken), "next tokens");
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void GreedyChainAllAcceptedThenBonus(string backendName)
    {
        var c = OneSample([3, 5, 1], [-1, 0, 1], SamplingParams.Greedy(0, 0), DraftKind.Deterministic,
            [Peak(3), Peak(5), Peak(1), Peak(6)]);
        var r = c.Run(Backends.Get(backendName));
        Assert.That(r.AcceptedCount[0], Is.EqualTo(3));
        Assert.That(r.Path(c, 0), Is.EqualTo(new[] { 0, 1, 2 }));
        Assert.That(r.NextToken[0], Is.EqualTo(6));
        AssertMatchesReference(c, r);
    }

    [TestCase("cpu", DraftKind.Deterministic)]
    [TestCase("cpu", DraftKind.Sampled)]
    [TestCase("vulkan", DraftKind.Sampled)]
    public void GreedyFirstRejectedEmitsTheArgmax(string backendName, DraftKind kind)
    {
        var c = OneSample([3, 5], [-1, 0], SamplingParams.Greedy(0, 0), kind, [Peak(4), Peak(5), Peak(1)]);
        var r = c.Run(Backends.Get(backendName));
        Assert.That(r.AcceptedCount[0], Is.EqualTo(0));
        Assert.That(r.NextToken[0], Is.EqualTo(4));
        Assert.That(r.AcceptedNodes, Is.EqualTo(new[] { -1, -1 }));
        AssertMatchesReference(c, r);
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void GreedyDeepTreeAcceptsTheSecondBranch(string backendName)
    {
        // root ─ 0:2 ─ 2:7
        //      └ 1:4 ─ 3:6
        //             └ 4:5
        var c = OneSample([2, 4, 7, 6, 5], [-1, -1, 0, 1, 1], SamplingParams.Greedy(3, 40), DraftKind.Deterministic,
            [Peak(4), Peak(7), Peak(5), Peak(1), Peak(2), Peak(0)]);
        var r = c.Run(Backends.Get(backendName));
        Assert.That(r.Path(c, 0), Is.EqualTo(new[] { 1, 4 }));
        Assert.That(r.NextToken[0], Is.EqualTo(0));
        AssertMatchesReference(c, r);
    }

    [Test]
    public void SampledDeepTreeAcceptsTheSecondBranch(
        [Values("cpu", "vulkan")] string backendName,
        [Values(DraftKind.Sampled, DraftKind.Deterministic)] DraftKind kind,
        [Values(1UL, 2UL, 3UL)] ulong seed)
    {
        // Target rows put all mass on one token, so token 2 is surely rejected, then 4 surely accepted (for Sampled the
        // residual max(0, P − Q) is still all on 4), then 6 rejected and 5 accepted; the bonus is drawn from {0, 3}.
        var c = OneSample([2, 4, 7, 6, 5], [-1, -1, 0, 1, 1], SamplingParams.Random(1f, seed, 9, 100), kind,
            [Only(4), Only(7), Only(5), Only(1), Only(2), Only(0, 3)],
            Enumerable.Repeat(new float[V], 6).ToArray());
        var r = c.Run(Backends.Get(backendName));
        Assert.That(r.Path(c, 0), Is.EqualTo(new[] { 1, 4 }));
        Assert.That(r.NextToken[0], Is.AnyOf(0, 3));
        Assert.That(r.LogProbs[0], Is.EqualTo(0f).Within(1e-6f), "p(4) = 1 at the root");
        Assert.That(r.LogProbs[2], Is.EqualTo(MathF.Log(0.5f)).Within(1e-6f), "bonus from {0, 3}");
        AssertMatchesReference(c, r);
    }

    [Test]
    public void SampledChainWithQEqualToPIsAllAcceptedThenBonusFromTheSampleKernel(
        [Values("cpu", "vulkan")] string backendName, [Values(0.6f, 1f)] float temperature, [Values(1, 2)] int seed)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 1000, n = 5;
        var rng = new System.Random(seed);
        var logits = SamplingTestData.Logits(rng, n + 1, vocab, masked: false);
        var p = SamplingParams.Random(temperature, (ulong)seed, 4, 17, topP: 0.9f);
        var tokens = Enumerable.Range(0, n).Select(i => SampleTests.RunReference([p], logits[(i * vocab)..((i + 1) * vocab)], vocab).Tokens[0]).ToArray();
        var c = new VerifyCase
        {
            NodeOffsets = [0, n], DraftTokens = tokens, Parents = [-1, 0, 1, 2, 3], Params = [p], Kinds = [DraftKind.Sampled],
            Vocab = vocab, Target = logits, Draft = logits,
        };
        var r = c.Run(backend);
        Assert.That(r.AcceptedCount[0], Is.EqualTo(n));
        var bonusRow = p;
        bonusRow.Position += n;
        var bonus = SampleTests.Run(backend, [bonusRow], logits[(n * vocab)..], vocab);
        Assert.That(r.NextToken[0], Is.EqualTo(bonus.Tokens[0]));
        Assert.That(r.LogProbs[n], Is.EqualTo(bonus.LogProbs[0]).Within(LogProbTolerance));
        AssertMatchesReference(c, r);
    }

    [Test]
    public void FirstRejectedRecoversFromTheResidual(
        [Values("cpu", "vulkan")] string backendName, [Values(DraftKind.Sampled, DraftKind.Deterministic)] DraftKind kind, [Values(1, 2, 3, 4)] int seed)
    {
        var rng = new System.Random(seed);
        const int vocab = 50;
        var logits = SamplingTestData.Logits(rng, 3, vocab, scale: 1f, masked: false);
        logits[7] = float.NegativeInfinity; // p(7) = 0 at the root: the draft token 7 is surely rejected
        var draft = (float[])logits.Clone();
        draft[7] = 3f;
        var c = new VerifyCase
        {
            NodeOffsets = [0, 2], DraftTokens = [7, 9], Parents = [-1, 0], Params = [SamplingParams.Random(1f, (ulong)seed, 1, 5)],
            Kinds = [kind], Vocab = vocab, Target = logits, Draft = draft,
        };
        var r = c.Run(Backends.Get(backendName));
        Assert.That(r.AcceptedCount[0], Is.EqualTo(0));
        Assert.That(r.NextToken[0], Is.Not.EqualTo(7));
        AssertMatchesReference(c, r);
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void EmptyDraftEmitsTheSampleKernelsToken(string backendName)
    {
        var backend = Backends.Get(backendName);
        const int vocab = 3001, samples = 40;
        var rng = new System.Random(77);
        var logits = SamplingTestData.Logits(rng, samples, vocab);
        var settings = Enumerable.Range(0, samples).Select(s => SamplingTestData.Params(rng, vocab, (uint)s, rng.Next(100))).ToArray();
        var c = new VerifyCase
        {
            NodeOffsets = new int[samples + 1], DraftTokens = [], Parents = [], Params = settings,
            Kinds = Enumerable.Range(0, samples).Select(s => (DraftKind)(s % 2)).ToArray(), Vocab = vocab, Target = logits,
        };
        var r = c.Run(backend);
        var sampled = SampleTests.Run(backend, settings, logits, vocab);
        Assert.That(r.AcceptedCount, Is.All.EqualTo(0));
        Assert.That(r.NextToken, Is.EqualTo(sampled.Tokens));
        Assert.That(r.LogProbs, Is.EqualTo(sampled.LogProbs).Within(LogProbTolerance));
    }

    [Test]
    public void RandomTreesMatchReference(
        [Values("cpu", "vulkan")] string backendName, [Values(7, 1000, 32001)] int vocab, [Values(1, 17)] int samples, [Values(1, 2)] int seed) =>
        CheckRandom(backendName, vocab, samples, seed);

    [TestCase("cpu", 50257, 6, 1)]
    [TestCase("cpu", 151936, 3, 2)]
    [TestCase("cpu", 100, 256, 3)]
    [TestCase("cpu", 20, 64, 4)]
    [TestCase("cpu", 20, 64, 5)]
    [TestCase("vulkan", 50257, 3, 6)]
    [TestCase("vulkan", 151936, 2, 7)]
    [TestCase("vulkan", 100, 256, 8)]
    public void RandomTreesMatchReferenceLarge(string backendName, int vocab, int samples, int seed) =>
        CheckRandom(backendName, vocab, samples, seed);

    /// <summary>Logit rows over lavapipe's 128 MiB binding limit: the Vulkan kernel splits the samples over several
    /// dispatches and still matches the CPU backend.</summary>
    [Test]
    public void SamplesBeyondOneBindingAreSplitOverDispatches()
    {
        var vk = Backends.Vulkan;
        const int vocab = 151936, samples = 120;
        var rng = new System.Random(8);
        var offsets = Enumerable.Range(0, samples + 1).Select(s => s).ToArray(); // one draft token each: 240 rows, 146 MB
        var target = new float[(long)2 * samples * vocab];
        for (long i = 0; i < target.Length; i++) target[i] = 8f * rng.NextSingle();
        var c = new VerifyCase
        {
            NodeOffsets = offsets, DraftTokens = Enumerable.Range(0, samples).Select(_ => rng.Next(vocab)).ToArray(),
            Parents = new int[samples].Select(_ => -1).ToArray(),
            Params = Enumerable.Range(0, samples).Select(s => SamplingParams.Random(s % 4 == 0 ? 0f : 1f, (ulong)s, (uint)s, s)).ToArray(),
            Kinds = Enumerable.Repeat(DraftKind.Deterministic, samples).ToArray(), Vocab = vocab, Target = target,
        };
        long dispatches = vk.Dispatches;
        var gpu = c.Run(vk);
        Assert.That(vk.Dispatches - dispatches, Is.GreaterThan(1), "expected the samples to be split");
        var cpu = c.Run(Backends.Cpu);
        Assert.That(gpu.AcceptedCount, Is.EqualTo(cpu.AcceptedCount));
        Assert.That(gpu.NextToken, Is.EqualTo(cpu.NextToken));
        Assert.That(gpu.LogProbs, Is.EqualTo(cpu.LogProbs).Within(LogProbTolerance));
    }

    private static void CheckRandom(string backendName, int vocab, int samples, int seed)
    {
        var c = VerifyCase.Random(new System.Random(seed * 1000 + vocab + samples), samples, vocab);
        var backend = Backends.Get(backendName);
        var r = c.Run(backend);
        AssertMatchesReference(c, r);
        var again = c.Run(backend);
        Assert.That(again.AcceptedNodes, Is.EqualTo(r.AcceptedNodes));
        Assert.That(again.NextToken, Is.EqualTo(r.NextToken));
        Assert.That(again.LogProbs, Is.EqualTo(r.LogProbs));
    }

    [TestCase("cpu", float.NaN)]
    [TestCase("cpu", float.PositiveInfinity)]
    [TestCase("vulkan", float.NaN)]
    [TestCase("vulkan", float.PositiveInfinity)]
    public void BadLogitsInRowsThatAreReadNameTheArgument(string backendName, float bad)
    {
        var backend = Backends.Get(backendName);
        VerifyCase Case() => OneSample([2, 4, 7], [-1, -1, 0], SamplingParams.Random(1f, 1, 0, 0), DraftKind.Sampled,
            [Only(4), Only(7), Only(5), Only(1)], [Peak(1), Peak(2), Peak(3), Peak(4)]);

        var c = Case();
        c.Target[V + 3] = bad; // row 1 (node 0) is never read: node 0 is rejected
        Assert.DoesNotThrow(() => c.Run(backend));

        c = Case();
        c.Target[3] = bad;
        var e = Assert.Throws<ArgumentException>(() => c.Run(backend));
        Assert.That(e!.ParamName, Is.EqualTo("targetLogits"));
        Assert.That(e.Message, Does.Contain("row 0"));

        c = Case();
        c.Target[2 * V + 6] = bad; // row of node 1, read after it is accepted
        e = Assert.Throws<ArgumentException>(() => c.Run(backend));
        Assert.That(e!.ParamName, Is.EqualTo("targetLogits"));
        Assert.That(e.Message, Does.Contain("row 2"));

        c = Case();
        c.Draft![5] = bad;
        e = Assert.Throws<ArgumentException>(() => c.Run(backend));
        Assert.That(e!.ParamName, Is.EqualTo("draftLogits"));

        c = Case();
        c.Target.AsSpan(0, V).Fill(float.NegativeInfinity);
        e = Assert.Throws<ArgumentException>(() => c.Run(backend));
        Assert.That(e!.ParamName, Is.EqualTo("targetLogits"));
        Assert.That(e.Message, Does.Contain("no finite"));
    }

    [TestCase("cpu")]
    [TestCase("vulkan")]
    public void BadArgumentsNameTheArgument(string backendName)
    {
        var backend = Backends.Get(backendName);
        VerifyCase Good() => new()
        {
            NodeOffsets = [0, 2, 3], DraftTokens = [1, 2, 3], Parents = [-1, 0, -1],
            Params = [SamplingParams.Random(1f, 1, 0, 0), SamplingParams.Random(1f, 1, 1, 0)],
            Kinds = [DraftKind.Sampled, DraftKind.Deterministic], Vocab = V, Target = new float[5 * V], Draft = new float[5 * V],
        };
        Assert.DoesNotThrow(() => Good().Run(backend));
        string? Fails(Action<VerifyCase> breakIt)
        {
            var c = Good();
            breakIt(c);
            return Assert.Throws(Is.InstanceOf<ArgumentException>(), () => c.Run(backend)) is ArgumentException e ? e.ParamName : null;
        }
        Assert.That(Fails(c => c.NodeOffsets = [0, 3, 2]), Is.EqualTo("batch.NodeOffsets"));
        Assert.That(Fails(c => c.NodeOffsets = [1, 2, 3]), Is.EqualTo("batch.NodeOffsets"));
        Assert.That(Fails(c => c.NodeOffsets = [0, 3]), Is.EqualTo("batch.NodeOffsets"));
        Assert.That(Fails(c => c.DraftTokens = [1, 2]), Is.EqualTo("batch.DraftTokens"));
        Assert.That(Fails(c => c.DraftTokens = [1, V, 3]), Is.EqualTo("batch.DraftTokens"));
        Assert.That(Fails(c => c.DraftTokens = [1, -1, 3]), Is.EqualTo("batch.DraftTokens"));
        Assert.That(Fails(c => c.Parents = [-1, 0]), Is.EqualTo("batch.Parents"));
        Assert.That(Fails(c => c.Parents = [-1, 1, -1]), Is.EqualTo("batch.Parents"));
        Assert.That(Fails(c => c.Parents = [-2, 0, -1]), Is.EqualTo("batch.Parents"));
        Assert.That(Fails(c => c.Parents = [-1, 0, 0]), Is.EqualTo("batch.Parents")); // parent local to its own sample
        Assert.That(Fails(c => c.Kinds = [DraftKind.Sampled]), Is.EqualTo("batch.Kinds"));
        Assert.That(Fails(c => c.Kinds = [DraftKind.Sampled, (DraftKind)7]), Is.EqualTo("batch.Kinds"));
        Assert.That(Fails(c => c.Vocab = 0), Is.EqualTo("batch.VocabSize"));
        Assert.That(Fails(c => c.Params[1].Temperature = float.NaN), Is.EqualTo("batch.Params"));
        Assert.That(Fails(c => c.Target = new float[5 * V - 1]), Is.EqualTo("targetLogits"));
        Assert.That(Fails(c => c.Draft = null), Is.EqualTo("draftLogits"));
        Assert.That(Fails(c => c.Draft = new float[4 * V]), Is.EqualTo("draftLogits"));

        // Greedy or Deterministic samples need no draft logits.
        var noDraft = Good();
        noDraft.Draft = null;
        noDraft.Kinds = [DraftKind.Deterministic, DraftKind.Deterministic];
        Assert.DoesNotThrow(() => noDraft.Run(backend));
        noDraft.Kinds = [DraftKind.Sampled, DraftKind.Sampled];
        noDraft.Params = [SamplingParams.Greedy(0, 0), SamplingParams.Greedy(1, 0)];
        Assert.DoesNotThrow(() => noDraft.Run(backend));

        using var target = backend.Allocate<float>(5 * V, "target");
        var good = Good();
        string? OutputFails(int counts, int nodes, int next, int logProbs)
        {
            void Call() => backend.Verify(good.Batch, target, null, new VerifyOutputs
            {
                AcceptedCount = new int[counts], AcceptedNodes = new int[nodes], NextToken = new int[next], LogProbs = new float[logProbs],
            });
            return Assert.Throws(Is.InstanceOf<ArgumentException>(), Call) is ArgumentException e ? e.ParamName : null;
        }
        good.Kinds = [DraftKind.Deterministic, DraftKind.Deterministic];
        Assert.That(OutputFails(1, 3, 2, 5), Is.EqualTo("outputs.AcceptedCount"));
        Assert.That(OutputFails(2, 2, 2, 5), Is.EqualTo("outputs.AcceptedNodes"));
        Assert.That(OutputFails(2, 3, 3, 5), Is.EqualTo("outputs.NextToken"));
        Assert.That(OutputFails(2, 3, 2, 4), Is.EqualTo("outputs.LogProbs"));
    }
}
