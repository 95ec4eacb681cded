using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Transformer;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// The step loop over the real transformer runtime (randomly initialised models): at temperature 0 every
/// strategy, with the suffix proposer and with draft models (one sharing the policy's weights, so long drafts are
/// accepted; one independent, so most are rejected), produces exactly the tokens of <c>off</c>; preemption under a
/// tiny KV budget changes nothing and releases every block.
/// </summary>
[TestFixture]
public sealed class TransformerGenerationTests
{
    private const int Stop = 0;
    private static readonly string[] Strategies = ["suffix:4", "suffix-tree:4,2,8", "chain:3", "tree:3,2,6", "adaptive"];

    private sealed class Setup : IDisposable
    {
        public required TransformerWeights PolicyWeights, OtherWeights;
        public required TransformerModel Policy, Draft;
        public required GenerationInstance Instance;

        public void Dispose()
        {
            Instance.Dispose();
            Policy.Dispose();
            Draft.Dispose();
            PolicyWeights.Dispose();
            OtherWeights.Dispose();
        }
    }

    private static Setup Build(ComputeBackend backend, string strategy, bool draftSharesPolicy, long budget = 4 << 20, DenseExecutorKind dense = DenseExecutorKind.Onnx)
    {
        var policyWeights = Weights(Config("qwen2", vocab: 29), 101);
        var otherWeights = Weights(Config("qwen2", vocab: 29, layers: 1), 102);
        var policy = NewModel(policyWeights, backend, blockSize: 8, budget: budget, dense: dense);
        // A draft with the policy's own weights (shared arena, its own KV cache) accepts everything at temperature 0.
        var draft = NewModel(draftSharesPolicy ? policyWeights : otherWeights, backend, blockSize: 8, dense: dense);
        IProposer[] proposers = [new SuffixProposer(), new DraftModelProposer(draft)];
        var options = new InstanceOptions { MaxBatch = 16, StopTokens = new HashSet<int> { Stop } };
        GenerationInstance instance;
        if (strategy == "adaptive")
        {
            var cost = new CostModel("test");
            foreach (int n in new[] { 1, 16, 64, 256 }) { cost.ObserveVerify(n, 0, 1e-3 + 2e-6 * n); cost.ObserveDraftForward(n, 2e-4 + 4e-7 * n); }
            cost.ObserveSuffix(1, 1e-6);
            var acceptance = new AcceptanceEstimator();
            var candidates = new[] { "suffix:4", "suffix-tree:4,2,8", "chain:2", "chain:4", "tree:3,2,6" }.Select(s => Strategy.Parse(s));
            instance = new GenerationInstance(policy, proposers, options with { Planner = new StrategySelector(cost, acceptance, candidates) }, acceptance, cost);
        }
        else instance = new GenerationInstance(policy, proposers, options with { Planner = new FixedStrategyPlanner(Strategy.Parse(strategy)) });
        return new Setup { PolicyWeights = policyWeights, OtherWeights = otherWeights, Policy = policy, Draft = draft, Instance = instance };
    }

    private static GenerationRequest[] Requests(int prompts, int samplesPerPrompt, int maxNewTokens, int seed)
    {
        var random = new Random(seed);
        var list = new List<GenerationRequest>();
        for (int p = 0; p < prompts; p++)
        {
            // Repetitive prompts give the suffix proposer something to match.
            var unit = Enumerable.Range(0, random.Next(2, 5)).Select(_ => random.Next(1, 29)).ToArray();
            var prompt = Enumerable.Repeat(unit, 3).SelectMany(u => u).ToArray();
            for (int k = 0; k < samplesPerPrompt; k++)
                list.Add(new GenerationRequest(p * samplesPerPrompt + k, p, k, prompt, SamplingParams.Greedy(0, 0), maxNewTokens));
        }
        return list.ToArray();
    }

    private static Dictionary<long, int[]> Run(GenerationInstance instance, GenerationRequest[] requests)
    {
        foreach (var r in requests) instance.Enqueue(r);
        var results = instance.RunToCompletion();
        Assert.That(results.Select(r => r.Request.SampleId), Is.Unique);
        Assert.That(results.Count, Is.EqualTo(requests.Length));
        return results.ToDictionary(r => r.Request.SampleId, r => r.Tokens);
    }

    private static Dictionary<long, int[]> Off(ComputeBackend backend, GenerationRequest[] requests)
    {
        using var setup = Build(backend, "off", draftSharesPolicy: false);
        return Run(setup.Instance, requests);
    }

    [Test]
    public void Greedy_output_of_every_strategy_equals_off([Values("cpu", "vulkan")] string backendName, [ValueSource(nameof(Strategies))] string strategy,
        [Values(true, false)] bool draftSharesPolicy)
    {
        var backend = Backends.Get(backendName);
        var requests = Requests(prompts: 3, samplesPerPrompt: 2, maxNewTokens: 24, seed: 7);
        var expected = Off(backend, requests);
        using var setup = Build(backend, strategy, draftSharesPolicy);
        var outputs = Run(setup.Instance, requests);
        foreach (var r in requests)
            Assert.That(outputs[r.SampleId], Is.EqualTo(expected[r.SampleId]), $"{strategy}: sample {r.SampleId}");
        if (draftSharesPolicy && (strategy.StartsWith("chain", StringComparison.Ordinal) || strategy.StartsWith("tree", StringComparison.Ordinal)))
            Assert.That(setup.Instance.Stats.DraftTokensAccepted, Is.GreaterThan(setup.Instance.Stats.Steps), "a draft equal to the policy is accepted in long runs");
        Assert.That(setup.Policy.ActiveSamples, Is.EqualTo(0), "finished samples release their KV");
        Assert.That(setup.Draft.ActiveSamples, Is.EqualTo(0), "finished samples release their draft KV");
        Assert.That(setup.Draft.Cache.FreeBlocks, Is.EqualTo(setup.Draft.Cache.NumBlocks));
        Assert.That(setup.Policy.Cache.FreeBlocks, Is.EqualTo(setup.Policy.Cache.NumBlocks));
    }

    /// <summary>The whole step on the Vulkan device (dense executor, attention, KV cache) decodes the CPU run's greedy tokens.</summary>
    [Test]
    public void Greedy_output_with_the_vulkan_dense_executor_equals_the_cpu_run([Values("off", "chain:3", "suffix-tree:4,2,8")] string strategy)
    {
        var requests = Requests(prompts: 3, samplesPerPrompt: 2, maxNewTokens: 20, seed: 9);
        var expected = Off(Backends.Cpu, requests);
        using var setup = Build(Backends.Vulkan, strategy, draftSharesPolicy: true, dense: DenseExecutorKind.Vulkan);
        Assert.That(setup.Policy.DenseExecutor, Is.EqualTo("vulkan"));
        var outputs = Run(setup.Instance, requests);
        foreach (var r in requests)
            Assert.That(outputs[r.SampleId], Is.EqualTo(expected[r.SampleId]), $"{strategy}: sample {r.SampleId}");
        if (strategy == "chain:3") Assert.That(setup.Instance.Stats.DraftTokensAccepted, Is.GreaterThan(0), "drafts were verified and accepted");
    }

    /// <summary>
    /// Under <c>--dense vulkan</c> a decode step's logits stay on the device: the forward is recorded, the verify
    /// kernel (and, for a draft model's chains, the sample kernel) reads the device-resident logits, and the host reads
    /// back only the small results — tokens, accepted paths, log-probs: 12 bytes per sample and 8 per verified row,
    /// 12 per token a draft chain sampled, under one logits row — in one submit per forward. A sampled draft chain's
    /// q is copied on the device into the verification's layout, never read back. At temperature 0 the tokens equal
    /// the CPU run's. A draft model's tree ranks each frontier row on the device (the top-tokens kernel): 8 + 8·TOPK
    /// bytes per row, at most 1 + TOPK·(DEPTH − 1) rows per sample.
    /// </summary>
    [TestCase("off", 0f)]
    [TestCase("suffix:4", 0f)]
    [TestCase("chain:3", 0f)]
    [TestCase("chain:3", 0.8f)]
    [TestCase("tree:3,2,6", 0f)]
    [TestCase("tree:3,2,6", 0.8f)]
    public void A_vulkan_dense_step_reads_back_no_logits(string strategy, float temperature)
    {
        const int vocab = 512;
        using var backend = Backends.OpenOwnVulkan();
        using var weights = Weights(Config("qwen2", vocab: vocab), 103);
        using var policy = NewModel(weights, backend, blockSize: 8, budget: 4 << 20, dense: DenseExecutorKind.Vulkan);
        using var draft = NewModel(weights, backend, blockSize: 8, budget: 4 << 20, dense: DenseExecutorKind.Vulkan);
        var options = new InstanceOptions { MaxBatch = 16, StopTokens = new HashSet<int> { Stop }, Planner = new FixedStrategyPlanner(Strategy.Parse(strategy)) };
        using var instance = new GenerationInstance(policy, [new SuffixProposer(), new DraftModelProposer(draft)], options);
        var requests = Requests(prompts: 3, samplesPerPrompt: 2, maxNewTokens: 24, seed: 10)
            .Select(r => temperature == 0 ? r : r with { Sampling = SamplingParams.Random(temperature, 5, 0, 0) }).ToArray();
        foreach (var r in requests) instance.Enqueue(r);
        Assert.That(instance.Step(), Is.True, "admission and the first step");
        int steps = 0;
        for (bool more = true; more; steps++)
        {
            int samples = instance.LiveCount;
            long rowsBefore = policy.Timings.Tokens, forwards = policy.Timings.Forwards + draft.Timings.Forwards;
            long bytes = backend.BytesRead, submits = backend.Submits;
            more = instance.Step();
            long rows = policy.Timings.Tokens - rowsBefore, read = backend.BytesRead - bytes;
            forwards = policy.Timings.Forwards + draft.Timings.Forwards - forwards;
            long drafted = strategy.StartsWith("chain", StringComparison.Ordinal) ? rows - samples : 0;   // the draft sample kernel's 12 bytes per token
            var shape = Strategy.Parse(strategy);
            long ranked = shape.Shape == DraftShape.Tree ? samples * (1 + shape.TopK * (shape.Depth - 1)) * (8 + 8 * shape.TopK) : 0;
            Assert.That(read, Is.LessThanOrEqualTo(12 * samples + 8 * rows + 12 * drafted + ranked).And.LessThan(vocab * sizeof(float)), $"step {steps}: {samples} samples, {rows} rows");
            Assert.That(backend.Submits - submits, Is.LessThanOrEqualTo(forwards + 1), $"step {steps}: {forwards} forwards");
        }
        Assert.That(steps, Is.GreaterThan(3));
        if (strategy is "chain:3" or "tree:3,2,6") Assert.That(instance.Stats.DraftTokensAccepted, Is.GreaterThan(0), "the draft model's drafts were verified");
        if (temperature > 0) return;

        using var onCpu = NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
        using var plain = new GenerationInstance(onCpu, [new SuffixProposer()], options with { Planner = new FixedStrategyPlanner(Strategy.Off) });
        var expected = Run(plain, requests);
        foreach (var r in instance.Finished)
            Assert.That(r.Tokens, Is.EqualTo(expected[r.Request.SampleId]), $"sample {r.Request.SampleId}");
    }

    [Test]
    public void Preemption_under_a_tiny_kv_budget_changes_nothing([Values("off", "chain:3", "suffix-tree:4,2,8", "tree:3,2,6")] string strategy)
    {
        var requests = Requests(prompts: 4, samplesPerPrompt: 2, maxNewTokens: 30, seed: 8);
        var expected = Off(Backends.Cpu, requests);
        // qwen2 tiny: 2 layers × K,V × 8 slots × 2 heads × 8 dims × 4 bytes = 2 KiB per block; 12 blocks hold ~2 samples.
        using var setup = Build(Backends.Cpu, strategy, draftSharesPolicy: true, budget: 12 * 2048);
        var outputs = Run(setup.Instance, requests);
        foreach (var r in requests)
            Assert.That(outputs[r.SampleId], Is.EqualTo(expected[r.SampleId]), $"sample {r.SampleId}");
        Assert.That(setup.Instance.Stats.Preemptions, Is.GreaterThan(0), "the budget forced preemption");
        Assert.That(setup.Policy.Cache.FreeBlocks, Is.EqualTo(setup.Policy.Cache.NumBlocks), "every block came back");
    }
}
