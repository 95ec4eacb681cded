using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// A draft model kept in step while it does not draft (<see cref="DraftModelProposer.Warm"/>) drafts what one that
/// catches up only when it drafts does: two proposers over the same random weights, the same samples, steps that do
/// not draft (a token appended; only one proposer is fed) between steps that do. On the managed dense layers (batch-
/// invariant) the drafts are equal bit for bit; on Vulkan attention with ONNX Runtime's dense layers the same tokens,
/// probabilities within 1e-5 relative. After a feed the draft holds every committed token but the pending one.
/// </summary>
public class DraftWarmTests
{
    private const int Vocab = 61;

    [Test]
    public void A_warmed_draft_drafts_what_a_caught_up_one_drafts([Values("managed", "vulkan")] string setup, [Values("chain:3", "tree:3,2,6")] string strategyText,
        [Values(0f, 0.8f)] float temperature, [Values(1, 2)] int seed)
    {
        var random = new Random(seed);
        using var weights = Weights(Config("qwen2", vocab: Vocab, layers: 1), 500 + seed);
        using var plainModel = NewModel(weights, setup);
        using var warmModel = NewModel(weights, setup);
        using var plain = new DraftModelProposer(plainModel);
        using var warm = new DraftModelProposer(warmModel);
        var samples = Enumerable.Range(0, 3).Select(s =>
        {
            var sampling = temperature == 0 ? SamplingParams.Greedy((uint)s, 0) : SamplingParams.Random(temperature, 11, (uint)s, 0);
            return new SampleState(new GenerationRequest(s, s, 0, RandomTokens(random, 3 + random.Next(6), Vocab), sampling, 200), s);
        }).ToArray();
        var strategy = Strategy.Parse(strategyText);
        int[] depths = [3, 3, 1];
        int fedTotal = 0;
        for (int step = 0; step < 9; step++)
        {
            if (step % 3 != 2)
            {
                // A step that does not draft: the sample gains a token (two for one of them, as a suffix draft might).
                foreach (var s in samples) s.Tokens.Add(random.Next(Vocab));
                samples[step % 3].Tokens.Add(random.Next(Vocab));
                int backlog = samples.Sum(s => warm.Backlog(s));
                Assert.That(warm.Warm(samples), Is.EqualTo(backlog), "the feed is every sample's backlog");
                fedTotal += backlog;
                foreach (var s in samples)
                {
                    Assert.That(warm.Backlog(s), Is.EqualTo(0), $"step {step}: sample {s.SampleId} is in step");
                    Assert.That(warmModel.CommittedLength(s.SampleId), Is.EqualTo(s.Tokens.Count - 1), "everything but the pending token is committed");
                }
                continue;
            }
            var expected = plain.Propose(samples, strategy, depths);
            var actual = warm.Propose(samples, strategy, depths);
            for (int s = 0; s < samples.Length; s++)
            {
                string what = $"step {step}, sample {s}";
                Assert.That(actual[s].Tokens, Is.EqualTo(expected[s].Tokens), what);
                Assert.That(actual[s].Parents, Is.EqualTo(expected[s].Parents), what);
                Assert.That(expected[s].Count, Is.GreaterThan(0), $"{what}: a draft was made");
                if (setup == "managed") Assert.That(actual[s].Probabilities, Is.EqualTo(expected[s].Probabilities), what);
                else
                    for (int n = 0; n < expected[s].Count; n++)
                        Assert.That(actual[s].Probabilities[n], Is.EqualTo(expected[s].Probabilities[n]).Within(1e-5 * Math.Abs(expected[s].Probabilities[n]) + 1e-7), what);
                // Accept the first node's path and a bonus token, as verification would.
                var path = new List<int>();
                for (int v = 0; v >= 0 && v < expected[s].Count; v = Array.IndexOf(expected[s].Parents.ToArray(), v)) path.Add(v);
                plain.Accepted(samples[s], expected[s], path.ToArray());
                warm.Accepted(samples[s], actual[s], path.ToArray());
                samples[s].Tokens.AddRange(expected[s].PathTo(path[^1]));
                samples[s].Tokens.Add(random.Next(Vocab));
            }
        }
        Assert.That(fedTotal, Is.GreaterThan(samples.Length * 6), "the feeds covered prompts and appended tokens");
        foreach (var sample in samples)
        {
            Assert.That(warmModel.CommittedLength(sample.SampleId), Is.EqualTo(plainModel.CommittedLength(sample.SampleId)), "both draft caches kept the same tokens");
            plain.Release(sample);
            warm.Release(sample);
        }
        Assert.That(warmModel.ActiveSamples, Is.EqualTo(0));
    }

    [Test]
    public void Nothing_to_feed_feeds_nothing()
    {
        using var weights = Weights(Config("qwen2", vocab: Vocab, layers: 1), 7);
        using var model = NewModel(weights, "managed");
        using var proposer = new DraftModelProposer(model);
        var sample = new SampleState(new GenerationRequest(0, 0, 0, [5], SamplingParams.Greedy(0, 0), 10), 0);
        Assert.That(proposer.Backlog(sample), Is.EqualTo(0), "a one-token prompt is all pending");
        Assert.That(proposer.Warm([sample]), Is.EqualTo(0));
        Assert.That(model.CommittedLength(0), Is.EqualTo(0));
    }
}
