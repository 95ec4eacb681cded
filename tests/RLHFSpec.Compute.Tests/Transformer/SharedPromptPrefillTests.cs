using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Transformer;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// Samples admitted together with one prompt (a GRPO group) prefill it once and copy its KV
/// (<see cref="InstanceOptions.SharePromptPrefill"/>): on the real transformer runtime, sampled and greedy runs with
/// sharing give the same tokens and log-probs as without — to the bit with the batch-invariant CPU kernels, within
/// rounding with the Vulkan dense executor — while feeding each prompt once; under a KV budget that forces
/// preemption too; every block is released at the end.
/// </summary>
[TestFixture]
public sealed class SharedPromptPrefillTests
{
    private static GenerationRequest[] Requests(int prompts, int samplesPerPrompt, float temperature, int seed)
    {
        var random = new Random(seed);
        var list = new List<int[]>();
        for (int p = 0; p < prompts; p++) list.Add(Enumerable.Range(0, random.Next(3, 12)).Select(_ => random.Next(1, 29)).ToArray());
        // Another prompt's copy later in the list: equal prompts share wherever they stand in the queue.
        list.Add(list[0]);
        return GenerationRequests.For(list, samplesPerPrompt, maxNewTokens: 20, temperature, topP: 1f, seed: (ulong)seed);
    }

    private static (SampleResult[] Results, GenerationStats Stats) Run(string setup, string strategy, bool share, GenerationRequest[] requests, long budget)
    {
        using var weights = Weights(Config("llama", vocab: 29), 31);
        var backend = Backends.Get(setup == "cpu" || setup == "managed" ? "cpu" : "vulkan");
        var dense = setup switch { "managed" => DenseExecutorKind.Managed, "vkdense" => DenseExecutorKind.Vulkan, _ => DenseExecutorKind.Onnx };
        using var policy = NewModel(weights, backend, blockSize: 4, budget: budget, dense: dense);
        using var draft = NewModel(weights, backend, blockSize: 4, budget: 1 << 20, dense: dense);
        using var proposer = new DraftModelProposer(draft);
        var options = new InstanceOptions
        {
            MaxBatch = 16, StopTokens = new HashSet<int> { 0 }, SharePromptPrefill = share, Planner = new FixedStrategyPlanner(Strategy.Parse(strategy)),
        };
        using var instance = new GenerationInstance(policy, [new SuffixProposer(), proposer], options);
        foreach (var r in requests) instance.Enqueue(r);
        var results = instance.RunToCompletion().OrderBy(r => r.Request.SampleId).ToArray();
        Assert.That(results.Select(r => r.Request.SampleId), Is.EqualTo(requests.Select(r => r.SampleId)), "every sample finishes once");
        Assert.That(policy.ActiveSamples, Is.EqualTo(0), "finished samples release their KV");
        Assert.That(policy.Cache.FreeBlocks, Is.EqualTo(policy.Cache.NumBlocks), "every block is free again");
        return (results, instance.Stats);
    }

    [Test]
    public void A_group_prefills_its_prompt_once_and_samples_the_same_tokens(
        [Values("cpu", "managed", "vulkan", "vkdense")] string setup, [Values("off", "chain:3")] string strategy, [Values(0f, 0.9f)] float temperature)
    {
        var requests = Requests(prompts: 3, samplesPerPrompt: 4, temperature, seed: 5);
        var (alone, aloneStats) = Run(setup, strategy, share: false, requests, budget: 1 << 20);
        var (shared, sharedStats) = Run(setup, strategy, share: true, requests, budget: 1 << 20);
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.That(shared[i].Tokens, Is.EqualTo(alone[i].Tokens), $"sample {i}: tokens");
            if (setup == "vkdense")
                // The Vulkan dense executor's few-row and many-row matrix paths round differently, so a prompt prefilled
                // in a smaller batch gives log-probs equal within rounding, not to the bit (as a preempted sample's re-prefill).
                Assert.That(shared[i].LogProbs, Is.EqualTo(alone[i].LogProbs).Within(1e-5f), $"sample {i}: log-probs");
            else
                Assert.That(shared[i].LogProbs.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(alone[i].LogProbs.Select(BitConverter.SingleToInt32Bits)), $"sample {i}: log-probs");
        }
        // Three distinct prompts of four samples each, the first prompt's again: each distinct prompt is fed once.
        long distinct = requests.Select(r => string.Join(",", r.Prompt)).Distinct().Sum(p => p.Split(',').Length);
        Assert.That(aloneStats.PrefillTokens, Is.EqualTo(requests.Sum(r => (long)r.Prompt.Length)));
        Assert.That(sharedStats.PrefillTokens, Is.EqualTo(distinct), "each distinct prompt is fed once");
        Assert.That(sharedStats.SharedPrefillTokens, Is.EqualTo(aloneStats.PrefillTokens - distinct), "the others are copied");
        Assert.That(aloneStats.SharedPrefillTokens, Is.EqualTo(0));
    }

    [Test]
    public void Sharing_under_a_kv_budget_that_preempts_changes_nothing([Values("off", "chain:3")] string strategy)
    {
        var requests = Requests(prompts: 3, samplesPerPrompt: 4, temperature: 0.9f, seed: 8);
        // 2 layers × K,V × 4 slots × 2 heads × 8 dims × 4 bytes = 1 KiB per block; a sample needs up to 8 blocks, so
        // 40 blocks hold about 5 of the 16: preemption and re-prefill.
        long budget = 40 * 1024;
        var (alone, aloneStats) = Run("managed", strategy, share: false, requests, budget);
        var (shared, sharedStats) = Run("managed", strategy, share: true, requests, budget);
        Assert.That(sharedStats.Preemptions + aloneStats.Preemptions, Is.GreaterThan(0), "the budget forced preemption");
        for (int i = 0; i < requests.Length; i++)
            Assert.That(shared[i].Tokens, Is.EqualTo(alone[i].Tokens), $"sample {i}");
        Assert.That(sharedStats.SharedPrefillTokens, Is.GreaterThan(0));
    }
}
