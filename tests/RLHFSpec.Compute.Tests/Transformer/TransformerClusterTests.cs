using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Generation;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// The generation cluster over real (randomly initialised) transformers sharing one weights arena, each instance
/// with its own KV cache on its own thread: greedy outputs equal one instance's for 1, 2 and 3 instances with
/// reallocation; live samples move by KV copy (kv_move on one backend, staged through host memory across backends)
/// and by recompute; the model-level copy continues a sample exactly. The dense layers run on the managed kernels,
/// which are batch-invariant: which samples share a step depends on the threads' timing, and with ONNX Runtime's
/// (whose rounding depends on the batch) a near-tie of two logits once decided a token differently on a loaded machine.
/// </summary>
[TestFixture]
public sealed class TransformerClusterTests
{
    private const int Vocab = 29;

    private static GenerationRequest[] LongTail(int samples, int shortTokens = 5, int longTokens = 40, int seed = 11)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, samples).Select(i =>
        {
            var prompt = RandomTokens(random, random.Next(3, 10), Vocab);
            return new GenerationRequest(i, i, 0, prompt, SamplingParams.Greedy(0, 0), i % 6 == 0 ? longTokens : shortTokens);
        }).ToArray();
    }

    private sealed class Fleet : IDisposable
    {
        public required TransformerWeights Weights;
        public readonly List<TransformerModel> Models = new();
        public readonly List<ComputeBackend> Backends = new();

        public GenerationInstance NewInstance(string strategy, ComputeBackend backend)
        {
            var policy = NewModel(Weights, backend, blockSize: 8, dense: DenseExecutorKind.Managed);
            Models.Add(policy);
            var proposers = new List<IProposer> { new SuffixProposer() };
            if (strategy.StartsWith("chain", StringComparison.Ordinal))
            {
                var draft = NewModel(Weights, backend, blockSize: 8, dense: DenseExecutorKind.Managed); // shares the policy's weights: chains are accepted
                Models.Add(draft);
                proposers.Add(new DraftModelProposer(draft));
            }
            return new GenerationInstance(policy, proposers, new InstanceOptions { MaxBatch = 32, Planner = new FixedStrategyPlanner(Strategy.Parse(strategy)) });
        }

        public void Dispose()
        {
            foreach (var m in Models) m.Dispose();
            foreach (var b in Backends) b.Dispose();
            Weights.Dispose();
        }
    }

    private static Fleet NewFleet() => new() { Weights = Weights(Config("qwen2", vocab: Vocab), 201) };

    private static readonly GenerationRequest[] Requests = LongTail(12);

    /// <summary>One instance's outputs for <see cref="Requests"/> (computed once).</summary>
    private static readonly Lazy<Dictionary<long, int[]>> Expected = new(() => Single(Requests));

    private static Dictionary<long, int[]> Single(GenerationRequest[] requests)
    {
        using var fleet = NewFleet();
        using var instance = fleet.NewInstance("off", Backends.Cpu);
        foreach (var r in requests) instance.Enqueue(r);
        return instance.RunToCompletion().ToDictionary(r => r.Request.SampleId, r => r.Tokens);
    }

    private static ClusterRunResult Run(Fleet fleet, int instances, ClusterOptions options, string strategy, bool ownBackends, GenerationRequest[] requests,
        bool vulkan = false)
    {
        using var cluster = new GenerationCluster(instances, _ =>
        {
            ComputeBackend backend = Backends.Cpu;
            if (ownBackends)
            {
                backend = vulkan ? Backends.OpenOwnVulkan() : new CpuBackend(threads: 1);
                fleet.Backends.Add(backend);
            }
            return fleet.NewInstance(strategy, backend);
        }, options);
        return cluster.Run(requests);
    }

    private static void AssertSame(ClusterRunResult result, Dictionary<long, int[]> expected, Fleet fleet)
    {
        Assert.That(result.Results.Select(r => r.Request.SampleId), Is.Unique);
        Assert.That(result.Results, Has.Count.EqualTo(expected.Count));
        foreach (var r in result.Results) Assert.That(r.Tokens, Is.EqualTo(expected[r.Request.SampleId]), $"sample {r.Request.SampleId}");
        foreach (var m in fleet.Models)
        {
            Assert.That(m.ActiveSamples, Is.EqualTo(0), "every sample released, moved ones on their source too");
            Assert.That(m.Cache.FreeBlocks, Is.EqualTo(m.Cache.NumBlocks));
        }
    }

    private static readonly ClusterOptions Forced = new() { Assignment = AssignmentPolicy.RoundRobin, RequireGain = false };

    [TestCase(1, "suffix:4")]
    [TestCase(2, "suffix:4")]
    [TestCase(3, "suffix:4")]
    [TestCase(2, "chain:3")]
    public void Greedy_outputs_equal_one_instance(int instances, string strategy)
    {
        using var fleet = NewFleet();
        var result = Run(fleet, instances, Forced.HoldTailUntilOthersDrain(instances), strategy, ownBackends: false, Requests);
        AssertSame(result, Expected.Value, fleet);
        if (instances > 1) Assert.That(result.Stats.Migrations + result.Stats.Recomputes, Is.GreaterThan(0), "the drained instances took part of the tail");
    }

    [Test]
    public void Live_samples_move_by_kv_copy_and_by_recompute([Values(MigrationMode.Copy, MigrationMode.Recompute)] MigrationMode mode, [Values(false, true)] bool ownBackends)
    {
        using var fleet = NewFleet();
        var result = Run(fleet, 2, (Forced with { Migration = mode }).HoldTailUntilOthersDrain(2), "suffix:4", ownBackends, Requests);
        AssertSame(result, Expected.Value, fleet);
        var stats = result.Stats;
        // qwen2 tiny: 2 layers × K,V × 8 slots × 2 heads × 8 dims × 4 bytes = 2 KiB per block.
        if (mode == MigrationMode.Copy)
        {
            Assert.That(stats.Migrations, Is.GreaterThan(0));
            Assert.That(stats.KvBytesMoved, Is.GreaterThan(0));
            Assert.That(stats.KvBytesMoved % 2048, Is.EqualTo(0), "whole blocks move");
            Assert.That(stats.Recomputes, Is.EqualTo(0));
        }
        else
        {
            Assert.That(stats.Recomputes, Is.GreaterThan(0));
            Assert.That(stats.Migrations, Is.EqualTo(0));
        }
    }

    [Test]
    public void A_kv_copy_overlaps_the_donors_steps_and_stays_lossless([Values(false, true)] bool ownBackends) => OverlappedCopy(ownBackends, vulkan: false);

    /// <summary>Instances on Vulkan devices of their own: the receiver reads the donor's frozen blocks between the donor's device operations.</summary>
    [Test]
    public void A_kv_copy_between_vulkan_instances_overlaps_the_donors_steps_and_stays_lossless() => OverlappedCopy(ownBackends: true, vulkan: true);

    /// <summary>
    /// Scenario attempts of <see cref="OverlappedCopy"/>: when and what the reallocator moves depends on the threads'
    /// timing, and a move of the donor's last samples leaves it nothing to step while the copy waits. On a loaded
    /// machine about one attempt in seven moved only such samples; five attempts all doing so would be a finding.
    /// </summary>
    private const int OverlapAttempts = 5;

    private static void OverlappedCopy(bool ownBackends, bool vulkan)
    {
        // Every sample of the donor (the even ones, under round robin) is long and every one of the receiver's short,
        // so after the receiver drains, a move of part of the donor's load leaves it steps to take while a copy waits.
        var random = new Random(13);
        var requests = Enumerable.Range(0, 16).Select(i =>
            new GenerationRequest(i, i, 0, RandomTokens(random, random.Next(3, 10), Vocab), SamplingParams.Greedy(0, 0), i % 2 == 0 ? 40 : 5)).ToArray();
        var expected = Single(requests);
        var log = new List<string>();
        for (int attempt = 0; attempt < OverlapAttempts; attempt++)
        {
            using var fleet = NewFleet();
            var options = (Forced with { Migration = MigrationMode.Copy }).HoldTailUntilOthersDrain(2);
            var hold = options.BeforeStep!;
            var idle = options.OnIdle!;
            long donorStep = -1;
            int donorIdle = 0; // 1 while the donor waits for work: it will not step again until it gets some
            int copiesDuringDonorSteps = 0;
            options = options with
            {
                BeforeStep = (k, step) =>
                {
                    // The donor has work from here on (set before the hold: a copy may begin while the donor waits in it).
                    if (k == 0) Volatile.Write(ref donorIdle, 0);
                    hold(k, step);
                    if (k == 0) Interlocked.Exchange(ref donorStep, step);
                },
                OnIdle = k =>
                {
                    idle(k);
                    if (k == 0) Volatile.Write(ref donorIdle, 1);
                },
                // The receiver holds each copy until the donor has begun another step: only an overlapped move lets it.
                // A donor left without work (its last samples moved) steps no more: that copy does not wait for it.
                BeforeMigrationCopy = (k, id) =>
                {
                    long at = Interlocked.Read(ref donorStep);
                    SpinWait.SpinUntil(() => Interlocked.Read(ref donorStep) > at || Volatile.Read(ref donorIdle) == 1, TimeSpan.FromSeconds(30));
                    long now = Interlocked.Read(ref donorStep);
                    if (now > at) Interlocked.Increment(ref copiesDuringDonorSteps);
                    lock (log) log.Add($"attempt {attempt + 1}, copy of {id}: donor step {at} -> {now}");
                },
            };
            var result = Run(fleet, 2, options, "suffix:4", ownBackends, requests, vulkan);
            AssertSame(result, expected, fleet);
            Assert.That(result.Stats.Migrations, Is.GreaterThan(0));
            Assert.That(result.Stats.OverlappedMigrations, Is.GreaterThan(0));
            if (copiesDuringDonorSteps > 0) return;
        }
        Assert.Fail($"in {OverlapAttempts} attempts the donor never stepped while a copy was pending: {string.Join("; ", log)}");
    }

    [Test]
    public void A_receiver_failing_before_its_copy_loses_no_sample()
    {
        using var fleet = NewFleet();
        var options = (Forced with { Migration = MigrationMode.Copy }).HoldTailUntilOthersDrain(2);
        int failures = 0;
        options = options with
        {
            BeforeMigrationCopy = (k, id) =>
            {
                if (Interlocked.Increment(ref failures) == 1) throw new InvalidOperationException("injected: receiver fails before copying");
            },
        };
        var result = Run(fleet, 2, options, "suffix:4", ownBackends: false, Requests);
        Assert.That(failures, Is.GreaterThan(0), "a copy was pending");
        Assert.That(result.Results.Select(r => r.Request.SampleId), Is.Unique);
        Assert.That(result.Results, Has.Count.EqualTo(Expected.Value.Count));
        foreach (var r in result.Results) Assert.That(r.Tokens, Is.EqualTo(Expected.Value[r.Request.SampleId]), $"sample {r.Request.SampleId}");
        Assert.That(result.Stats.Instances[1].Failure, Does.Contain("injected"));
        Assert.That(result.Stats.FailureReadmissions, Is.GreaterThan(0));
        var donor = fleet.Models[0];
        Assert.That(donor.ActiveSamples, Is.EqualTo(0), "the surviving donor released everything, the moved sample's old KV too");
        Assert.That(donor.Cache.FreeBlocks, Is.EqualTo(donor.Cache.NumBlocks));
    }

    [Test]
    public void Reallocation_benchmark_reports_both_completion_times()
    {
        using var fleet = NewFleet();
        var requests = ClusterBenchmark.LongTail(8, Vocab, shortTokens: 3, longTokens: 20, tailEvery: 4, SamplingParams.Greedy(0, 0));
        var comparison = ClusterBenchmark.CompareReallocation(2, _ => fleet.NewInstance("suffix:4", Backends.Cpu), requests,
            new ClusterOptions { Assignment = AssignmentPolicy.RoundRobin, RequireGain = false }, repeats: 1);
        Assert.That(comparison.SameOutputs, Is.True);
        Assert.That(comparison.Static.Migrations + comparison.Static.Recomputes + comparison.Static.Reassigned, Is.EqualTo(0));
        Assert.That(comparison.Static.WallSeconds, Is.GreaterThan(0));
        Assert.That(comparison.Reallocated.WallSeconds, Is.GreaterThan(0));
        Assert.That(comparison.Static.Instances.Select(i => i.LastFinishSeconds).Max(), Is.LessThanOrEqualTo(comparison.Static.WallSeconds));
    }

    /// <summary>
    /// Measurement, not a check: a long tail (16 of 64 samples 25× longer, all on instance 0 under round-robin) on
    /// two instances of a mid-size random transformer, static vs reallocated; prints both completion times.
    /// </summary>
    [Test, Explicit("a benchmark: run by hand, prints completion times")]
    public void Measure_reallocation_on_a_long_tail()
    {
        var config = new Compute.Model.Formats.ModelConfig
        {
            ModelType = "qwen2", VocabSize = 512, HiddenSize = 256, IntermediateSize = 704, NumHiddenLayers = 4, NumAttentionHeads = 8,
            NumKeyValueHeads = 4, RopeTheta = 1e6, RmsNormEps = 1e-6, MaxPositionEmbeddings = 512, TieWordEmbeddings = false,
        };
        using var weights = Weights(config, 301);
        var models = new List<TransformerModel>();
        try
        {
            GenerationInstance Factory(int k)
            {
                // The cores split between the instances: one CPU backend thread and one ONNX Runtime intra-op thread each per core share.
                int cores = Math.Max(1, Environment.ProcessorCount / 2);
                var policy = new TransformerModel(weights, new CpuBackend(threads: cores),
                    new TransformerOptions { KvBlockSize = 16, KvMemoryBudgetBytes = 64 << 20, Session = new Compute.Model.Onnx.OnnxSessionOptions { IntraOpThreads = cores } });
                models.Add(policy);
                return new GenerationInstance(policy, [new SuffixProposer()], new InstanceOptions { MaxBatch = 64, Planner = new FixedStrategyPlanner(Strategy.Off) });
            }
            var requests = ClusterBenchmark.LongTail(64, 512, shortTokens: 4, longTokens: 100, tailEvery: 4, SamplingParams.Greedy(0, 0));
            foreach (var mode in new[] { MigrationMode.Auto, MigrationMode.Recompute })
            {
                var c = ClusterBenchmark.CompareReallocation(2, Factory, requests, new ClusterOptions { Assignment = AssignmentPolicy.RoundRobin, Migration = mode }, repeats: 2);
                TestContext.Out.WriteLine($"{mode}: static {c.Static.WallSeconds:F2} s, reallocated {c.Reallocated.WallSeconds:F2} s, speedup {c.Speedup:F2}x, same outputs {c.SameOutputs}; " +
                    $"migrations {c.Reallocated.Migrations} ({c.Reallocated.KvBytesMoved / 1024} KiB in {c.Reallocated.CopySeconds * 1e3:F1} ms), recomputes {c.Reallocated.Recomputes}; " +
                    $"last finish static [{string.Join(", ", c.Static.Instances.Select(i => i.LastFinishSeconds.ToString("F2")))}] reallocated [{string.Join(", ", c.Reallocated.Instances.Select(i => i.LastFinishSeconds.ToString("F2")))}]; " +
                    $"busy reallocated [{string.Join(", ", c.Reallocated.Instances.Select(i => i.BusySeconds.ToString("F2")))}]");
                Assert.That(c.SameOutputs, Is.True);
            }
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    [Test]
    public void A_copied_sample_continues_exactly([Values(false, true)] bool ownBackend)
    {
        using var weights = Weights(Config("llama", vocab: Vocab), 202);
        using var otherBackend = new CpuBackend(threads: 1);
        using var source = NewModel(weights, Backends.Cpu, blockSize: 4);
        using var target = NewModel(weights, ownBackend ? otherBackend : Backends.Cpu, blockSize: 4);
        using var reference = NewModel(weights, Backends.Cpu, blockSize: 4);
        var tokens = RandomTokens(new Random(5), 11, Vocab);
        Prefill(source, 1, tokens);
        Prefill(reference, 1, tokens);
        Assert.That(source.KvBytes(1), Is.EqualTo(3L * 4 * 2 * 2 * 2 * 8 * 4), "3 blocks of 4 slots × 2 layers × K,V × 2 heads × 8 dims × fp32");
        Assert.That(source.TryCopySampleTo(1, target, 7), Is.True);
        Assert.That(target.CommittedLength(7), Is.EqualTo(11));
        source.Release(1);
        var next = new[] { 3, 17 };
        var got = Forward(target, [7], [next], [Chain(2)]);
        var want = Forward(reference, [1], [next], [Chain(2)]);
        for (int t = 0; t < 2; t++) AssertClose(got[t], want[t], 1e-5, $"token {t} after the copy");
    }

    [Test]
    public void Copy_refuses_pending_tokens_and_other_shapes()
    {
        using var weights = Weights(Config("llama", vocab: Vocab), 203);
        using var source = NewModel(weights, Backends.Cpu, blockSize: 4);
        using var otherBlocks = NewModel(weights, Backends.Cpu, blockSize: 8);
        using var target = NewModel(weights, Backends.Cpu, blockSize: 4);
        Prefill(source, 1, [1, 2, 3, 4, 5]);
        Assert.That(source.TryCopySampleTo(1, otherBlocks, 1), Is.False, "blocks of another shape");
        Assert.That(otherBlocks.ActiveSamples, Is.EqualTo(0));
        Assert.That(source.TryReserve(1, 2), Is.True);
        Assert.Throws<InvalidOperationException>(() => source.TryCopySampleTo(1, target, 1), "reserved, uncommitted tokens");
        source.Commit(1, []);
        Assert.Throws<InvalidOperationException>(() => source.TryCopySampleTo(1, target, 1), "rejected tokens not rolled back");
        source.Rollback(1);
        Assert.That(source.TryCopySampleTo(1, target, 1), Is.True);
        Assert.Throws<ArgumentException>(() => source.TryCopySampleTo(1, target, 1), "the target already holds the id");
    }
}
