using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Transformer;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// Draft trees ranked by the top-tokens kernel (only TOPK pairs per frontier row come back) equal those ranked on the
/// host from whole logits rows read back, step after step on random draft models and prompts: identical (probabilities
/// bit for bit) on the CPU backend; on Vulkan the same nodes, probabilities within 1e-5 relative (its softmax
/// denominator is summed in float). Greedy rows, sampled rows and a top-p row (the kernel's host fallback) are mixed.
/// </summary>
public class DraftTreeTopTokensTests
{
    private const int Vocab = 300;

    [Test]
    public void Trees_ranked_by_the_kernel_equal_the_host_path([Values("cpu", "vkdense")] string setup, [Values(0f, 0.8f)] float temperature, [Values(1, 2)] int seed)
    {
        var random = new Random(seed);
        using var weights = Weights(Config("qwen2", vocab: Vocab, layers: 1), 400 + seed);
        using var hostModel = NewModel(weights, setup);
        using var deviceModel = NewModel(weights, setup);
        using var host = new DraftModelProposer(hostModel) { RanksOnHost = true };
        using var device = new DraftModelProposer(deviceModel);
        var samples = Enumerable.Range(0, 3).Select(s =>
        {
            var sampling = temperature == 0 ? SamplingParams.Greedy((uint)s, 0) : SamplingParams.Random(temperature, 9, (uint)s, 0, topP: s == 2 ? 0.9f : 1f);
            var prompt = RandomTokens(random, 3 + random.Next(6), Vocab);
            return new SampleState(new GenerationRequest(s, s, 0, prompt, sampling, 40), s);
        }).ToArray();
        var strategy = Strategy.Parse("tree:4,3,10");
        int[] depths = [4, 4, 2];
        for (int step = 0; step < 4; step++)
        {
            var expected = host.Propose(samples, strategy, depths);
            var actual = device.Propose(samples, strategy, depths);
            for (int s = 0; s < samples.Length; s++)
            {
                string what = $"step {step}, sample {s}";
                Assert.That(actual[s].Tokens, Is.EqualTo(expected[s].Tokens), what);
                Assert.That(actual[s].Parents, Is.EqualTo(expected[s].Parents), what);
                if (setup == "cpu") Assert.That(actual[s].Probabilities, Is.EqualTo(expected[s].Probabilities), what);
                else
                    for (int n = 0; n < expected[s].Count; n++)
                        Assert.That(actual[s].Probabilities[n], Is.EqualTo(expected[s].Probabilities[n]).Within(1e-5 * expected[s].Probabilities[n]), what);
                Assert.That(expected[s].MaxDepth, Is.GreaterThan(1), $"{what}: the tree grew past the root's children");
                // Accept the deepest path and a bonus token, as verification would.
                int leaf = Enumerable.Range(0, expected[s].Count).MaxBy(n => expected[s].Depths[n]);
                var path = new List<int>();
                for (int v = leaf; v >= 0; v = expected[s].Parents[v]) path.Insert(0, v);
                host.Accepted(samples[s], expected[s], path.ToArray());
                device.Accepted(samples[s], actual[s], path.ToArray());
                samples[s].Tokens.AddRange(expected[s].PathTo(leaf));
                samples[s].Tokens.Add(random.Next(Vocab));
            }
        }
        foreach (var sample in samples)
        {
            Assert.That(deviceModel.CommittedLength(sample.SampleId), Is.EqualTo(hostModel.CommittedLength(sample.SampleId)), "both draft caches kept the same tokens");
            host.Release(sample);
            device.Release(sample);
        }
    }
}
