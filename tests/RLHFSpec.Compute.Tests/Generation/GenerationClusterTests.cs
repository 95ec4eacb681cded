using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Tests.Statistics;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Generation;

/// <summary>
/// The generation cluster over synthetic models, instances on their own threads: outputs (greedy, and sampled
/// under a seed) equal a single instance's for 1, 2 and 3 instances, with and without reallocation, with moves by
/// KV copy and by recompute; every sample comes back exactly once; an instance that throws (before a step, or in
/// the middle of one) or is stopped loses nothing; predicted-length assignment balances a known long tail.
/// </summary>
public class GenerationClusterTests
{
    private const int Vocab = 40;
    private const int ShortTokens = 8, LongTokens = 120;
    private static readonly SyntheticModel Target = new(Vocab, salt: 77, window: 3, spread: 4f);
    private static readonly SyntheticModel Draft = new(Vocab, salt: 78, basis: Target, noise: 1.2f, window: 3);

    /// <summary>An instance over a fresh synthetic target (recorded in <paramref name="models"/>) and draft.</summary>
    private static GenerationInstance NewInstance(string strategy, List<SyntheticTargetModel> models, int maxBatch = 64, Func<SyntheticTargetModel, ITargetModel>? wrap = null)
    {
        var model = new SyntheticTargetModel(Backends.Cpu, Target, maxContext: 200);
        models.Add(model);
        var draft = new SyntheticTargetModel(Backends.Cpu, Draft, maxContext: 200);
        IProposer[] proposers = [new SuffixProposer(), new DraftModelProposer(draft)];
        return new GenerationInstance(wrap?.Invoke(model) ?? model, proposers, new InstanceOptions { MaxBatch = maxBatch, Planner = new FixedStrategyPlanner(Strategy.Parse(strategy)) });
    }

    /// <summary>
    /// A long tail: every sixth sample generates <see cref="LongTokens"/>, the rest <see cref="ShortTokens"/> (no stop
    /// token, so lengths are exact), one prompt each. Round-robin over 2 or 3 instances puts every long sample on
    /// instance 0.
    /// </summary>
    internal static GenerationRequest[] LongTail(int samples, SamplingParams sampling, int seed = 3, int shortTokens = ShortTokens, int longTokens = LongTokens)
    {
        var random = new Random(seed);
        var list = new List<GenerationRequest>();
        for (int i = 0; i < samples; i++)
        {
            var prompt = Enumerable.Range(0, random.Next(3, 9)).Select(_ => random.Next(1, Vocab)).ToArray();
            list.Add(new GenerationRequest(i, i, 0, prompt, sampling, i % 6 == 0 ? longTokens : shortTokens));
        }
        return list.ToArray();
    }

    private static Dictionary<long, SampleResult> Single(string strategy, GenerationRequest[] requests)
    {
        var models = new List<SyntheticTargetModel>();
        using var instance = NewInstance(strategy, models);
        foreach (var r in requests) instance.Enqueue(r);
        return instance.RunToCompletion().ToDictionary(r => r.Request.SampleId);
    }

    private static ClusterRunResult RunCluster(int instances, ClusterOptions options, string strategy, GenerationRequest[] requests, List<SyntheticTargetModel> models)
    {
        using var cluster = new GenerationCluster(instances, _ => NewInstance(strategy, models), options);
        return cluster.Run(requests);
    }

    private static void AssertSameOutputs(ClusterRunResult result, Dictionary<long, SampleResult> expected, GenerationRequest[] requests)
    {
        Assert.That(result.Results.Select(r => r.Request.SampleId), Is.Unique, "every sample exactly once");
        Assert.That(result.Results.Select(r => r.Request.SampleId).Order(), Is.EqualTo(requests.Select(r => r.SampleId).Order()));
        foreach (var r in result.Results)
        {
            var e = expected[r.Request.SampleId];
            Assert.That(r.Tokens, Is.EqualTo(e.Tokens), $"sample {r.Request.SampleId}: tokens");
            Assert.That(r.LogProbs, Is.EqualTo(e.LogProbs).Within(1e-5f), $"sample {r.Request.SampleId}: log-probs");
            Assert.That(r.FinishReason, Is.EqualTo(e.FinishReason));
        }
    }

    private static readonly ClusterOptions Forced = new() { Assignment = AssignmentPolicy.RoundRobin, RequireGain = false };

    [Test]
    public void Greedy_outputs_equal_one_instance([Values(1, 2, 3)] int instances, [Values(false, true)] bool reallocate, [Values("off", "suffix:4", "chain:3")] string strategy)
    {
        var requests = LongTail(24, SamplingParams.Greedy(0, 0));
        var expected = Single("off", requests);
        var models = new List<SyntheticTargetModel>();
        var result = RunCluster(instances, (Forced with { Reallocate = reallocate }).HoldTailUntilOthersDrain(instances), strategy, requests, models);
        AssertSameOutputs(result, expected, requests);
        if (reallocate && instances > 1)
            Assert.That(result.Stats.Migrations + result.Stats.Recomputes, Is.GreaterThan(0), "the drained instances took part of the tail");
        if (!reallocate) Assert.That(result.Stats.Migrations + result.Stats.Recomputes + result.Stats.Reassigned, Is.EqualTo(0));
        Assert.That(models.Sum(m => m.Samples), Is.EqualTo(0), "every model released every sample (moved ones on the source too)");
        Assert.That(result.Stats.Total.TokensGenerated, Is.EqualTo(requests.Sum(r => (long)r.MaxNewTokens)));
    }

    [Test]
    public void Live_samples_move_mid_generation_by_copy_and_by_recompute([Values(MigrationMode.Copy, MigrationMode.Recompute)] MigrationMode mode,
        [Values("suffix:4", "suffix-tree:4,2,8")] string strategy)
    {
        var requests = LongTail(18, SamplingParams.Greedy(0, 0));
        var expected = Single("off", requests);
        var models = new List<SyntheticTargetModel>();
        var result = RunCluster(2, (Forced with { Migration = mode }).HoldTailUntilOthersDrain(2), strategy, requests, models);
        AssertSameOutputs(result, expected, requests);
        var stats = result.Stats;
        if (mode == MigrationMode.Copy)
        {
            Assert.That(stats.Migrations, Is.GreaterThan(0), "live samples moved with their KV");
            Assert.That(stats.KvBytesMoved, Is.GreaterThan(0));
            Assert.That(stats.Recomputes, Is.EqualTo(0));
            Assert.That(models.Sum(m => m.CopiesOut), Is.EqualTo(stats.Migrations), "each migration is one model-level copy");
        }
        else
        {
            Assert.That(stats.Recomputes, Is.GreaterThan(0), "started samples moved without their KV");
            Assert.That(stats.Migrations, Is.EqualTo(0));
            Assert.That(stats.KvBytesMoved, Is.EqualTo(0));
            // The receiver re-prefilled each recomputed sample's committed tokens: more than the prompts alone.
            Assert.That(stats.Total.PrefillTokens, Is.GreaterThan(requests.Sum(r => (long)r.Prompt.Length)));
        }
        Assert.That(models.Sum(m => m.Samples), Is.EqualTo(0));
        Assert.That(stats.Instances[1].SamplesFinished, Is.GreaterThan(requests.Length / 2), "instance 1 finished moved long samples too");
    }

    /// <summary>
    /// Strategy off only: with drafts, a sampled token depends on what was drafted (a deterministic draft x is
    /// accepted when u &lt; p(x), else the token is drawn from the residual), which keeps the target distribution but
    /// not the very tokens; and suffix drafts depend on which sequences an instance has indexed, so on placement.
    /// </summary>
    [Test]
    public void Sampled_outputs_do_not_change_with_migration([Values("off")] string strategy, [Values(MigrationMode.Copy, MigrationMode.Recompute)] MigrationMode mode)
    {
        var requests = LongTail(18, SamplingParams.Random(1f, seed: 1234, sampleId: 0, position: 0));
        var expected = Single(strategy, requests);
        var models = new List<SyntheticTargetModel>();
        var result = RunCluster(2, (Forced with { Migration = mode }).HoldTailUntilOthersDrain(2), strategy, requests, models);
        AssertSameOutputs(result, expected, requests);
        Assert.That(result.Stats.Migrations + result.Stats.Recomputes, Is.GreaterThan(0), "samples moved mid-generation");
        // The outputs are really sampled: greedy decoding gives other tokens.
        var greedy = Single("off", LongTail(18, SamplingParams.Greedy(0, 0)));
        Assert.That(result.Results.Count(r => !r.Tokens.SequenceEqual(greedy[r.Request.SampleId].Tokens)), Is.GreaterThan(requests.Length / 2));
    }

    [Test]
    public void An_instance_that_throws_before_a_step_loses_no_sample([Values(1, 2)] int failing, [Values(0L, 3L)] long atStep)
    {
        var requests = LongTail(24, SamplingParams.Greedy(0, 0));
        var expected = Single("off", requests);
        var models = new List<SyntheticTargetModel>();
        var options = new ClusterOptions
        {
            Assignment = AssignmentPolicy.RoundRobin,
            BeforeStep = (k, step) => { if (k == failing && step == atStep) throw new InvalidOperationException("injected fault"); },
        };
        var result = RunCluster(3, options, "suffix:4", requests, models);
        AssertSameOutputs(result, expected, requests);
        Assert.That(result.Stats.Instances[failing].Failure, Does.Contain("injected fault"));
        Assert.That(result.Stats.FailureReadmissions, Is.GreaterThan(0));
        Assert.That(result.Stats.Instances.Where(i => i.Instance != failing).All(i => i.Failure is null));
    }

    /// <summary>Throws from the n-th forward (counted from 1), in the middle of a step: after reservations, before the commit.</summary>
    private sealed class FaultyModel(SyntheticTargetModel inner, int failAtForward) : ITargetModel
    {
        private int _forwards;
        public int VocabSize => inner.VocabSize;
        public ComputeBackend Backend => inner.Backend;
        public int MaxContext => inner.MaxContext;
        public int CommittedLength(long sampleId) => inner.CommittedLength(sampleId);
        public bool TryReserve(long sampleId, int newTokens) => inner.TryReserve(sampleId, newTokens);
        public void Commit(long sampleId, ReadOnlySpan<int> keep) => inner.Commit(sampleId, keep);
        public void Rollback(long sampleId) => inner.Rollback(sampleId);
        public void Release(long sampleId) => inner.Release(sampleId);

        public void Forward(in ForwardBatch batch, DeviceBuffer<float> logits)
        {
            if (++_forwards == failAtForward) throw new IOException("injected device loss");
            inner.Forward(batch, logits);
        }
    }

    [Test]
    public void An_instance_that_throws_mid_step_loses_no_sample([Values(1, 2, 9)] int failAtForward, [Values(false, true)] bool reallocate)
    {
        var requests = LongTail(24, SamplingParams.Greedy(0, 0));
        var expected = Single("off", requests);
        var models = new List<SyntheticTargetModel>();
        // Instance 0 holds the tail; its first forward is the prefill, the second a decode step, the ninth mid-tail.
        using var cluster = new GenerationCluster(2, k => NewInstance("suffix:4", models, wrap: m => k == 0 ? new FaultyModel(m, failAtForward) : m),
            Forced with { Reallocate = reallocate });
        var result = cluster.Run(requests);
        AssertSameOutputs(result, expected, requests);
        Assert.That(result.Stats.Instances[0].Failure, Does.Contain("injected device loss"));
        Assert.That(cluster.IsOut(0), Is.True);
        // A later run goes on with the survivor alone.
        var again = cluster.Run(requests.Select(r => r with { SampleId = r.SampleId + 1000 }).ToArray());
        Assert.That(again.Results, Has.Count.EqualTo(requests.Length));
        Assert.That(again.Stats.Instances[0].Steps, Is.EqualTo(0));
    }

    [Test]
    public void A_stopped_instance_hands_its_samples_over()
    {
        var requests = LongTail(24, SamplingParams.Greedy(0, 0));
        var expected = Single("off", requests);
        var models = new List<SyntheticTargetModel>();
        GenerationCluster? cluster = null;
        var options = new ClusterOptions
        {
            Assignment = AssignmentPolicy.RoundRobin,
            Reallocate = false,
            BeforeStep = (k, step) => { if (k == 0 && step == 4) cluster!.StopInstance(0); },
        };
        using (cluster = new GenerationCluster(2, _ => NewInstance("chain:3", models), options))
        {
            var result = cluster.Run(requests);
            AssertSameOutputs(result, expected, requests);
            Assert.That(result.Stats.Instances[0].Failure, Is.EqualTo("stopped"));
            Assert.That(result.Stats.Instances[0].Steps, Is.EqualTo(5), "it stops at the boundary after the step during which it was asked to");
            Assert.That(result.Stats.FailureReadmissions, Is.GreaterThan(0));
        }
    }

    [Test]
    public void When_every_instance_fails_the_run_throws()
    {
        var requests = LongTail(12, SamplingParams.Greedy(0, 0));
        var models = new List<SyntheticTargetModel>();
        using var cluster = new GenerationCluster(2, _ => NewInstance("off", models),
            new ClusterOptions { BeforeStep = (_, step) => { if (step == 2) throw new InvalidOperationException("injected"); } });
        var e = Assert.Throws<InvalidOperationException>(() => cluster.Run(requests))!;
        Assert.That(e.Message, Does.Contain("did not finish").And.Contain("injected"));
    }

    [Test]
    public void Predicted_length_assignment_balances_a_known_long_tail()
    {
        // Round-robin puts every long sample on instance 0; once the predictor has seen the prompts, the
        // longest-first assignment spreads them. Reallocation off, so only the assignment decides.
        var requests = LongTail(24, SamplingParams.Greedy(0, 0));
        var models = new List<SyntheticTargetModel>();
        long[] Tokens(GenerationCluster c)
        {
            var before = Enumerable.Range(0, 2).Select(k => c.Instance(k).Stats.TokensGenerated).ToArray();
            c.Run(requests.Select(r => r with { SampleId = r.SampleId + 100 * c.Predictor.KnownPrompts }).ToArray());
            return Enumerable.Range(0, 2).Select(k => c.Instance(k).Stats.TokensGenerated - before[k]).ToArray();
        }
        var options = new ClusterOptions { Reallocate = false, Assignment = AssignmentPolicy.PredictedLength };
        using var cluster = new GenerationCluster(2, _ => NewInstance("off", models), options);
        var first = Tokens(cluster); // prompts unknown: the prompt-length heuristic
        Assert.That(cluster.Predictor.KnownPrompts, Is.EqualTo(24));
        var second = Tokens(cluster);
        using var roundRobin = new GenerationCluster(2, _ => NewInstance("off", models), options with { Assignment = AssignmentPolicy.RoundRobin });
        var rr = Tokens(roundRobin);
        double Imbalance(long[] t) => (double)t.Max() / t.Min();
        Assert.That(Imbalance(rr), Is.GreaterThan(3), "round-robin: the tail on one instance");
        Assert.That(Imbalance(second), Is.LessThan(1.2), $"learned lengths: balanced ({second[0]} vs {second[1]}; first run {first[0]} vs {first[1]})");
    }

    /// <summary>
    /// A synthetic target whose forward also waits as a device would: <paramref name="fixedMs"/> per forward plus
    /// <paramref name="perTokenMs"/> per token fed, sleeping rather than computing, so instances on threads behave like
    /// instances on their own devices even on a 2-core machine.
    /// </summary>
    private sealed class DeviceTimeModel(SyntheticTargetModel inner, double fixedMs, double perTokenMs) : ITargetModel, IMigratableModel
    {
        public int VocabSize => inner.VocabSize;
        public ComputeBackend Backend => inner.Backend;
        public int MaxContext => inner.MaxContext;
        public int CommittedLength(long sampleId) => inner.CommittedLength(sampleId);
        public bool TryReserve(long sampleId, int newTokens) => inner.TryReserve(sampleId, newTokens);
        public void Commit(long sampleId, ReadOnlySpan<int> keep) => inner.Commit(sampleId, keep);
        public void Rollback(long sampleId) => inner.Rollback(sampleId);
        public void Release(long sampleId) => inner.Release(sampleId);
        public long KvBytes(long sampleId) => inner.KvBytes(sampleId);
        public bool TryCopySampleTo(long sampleId, ITargetModel target, long targetId) =>
            target is DeviceTimeModel other && inner.TryCopySampleTo(sampleId, other.Inner, targetId);
        public SyntheticTargetModel Inner => inner;

        public void Forward(in ForwardBatch batch, DeviceBuffer<float> logits)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            inner.Forward(batch, logits);
            double wait = fixedMs + perTokenMs * batch.Tokens.Length - clock.Elapsed.TotalMilliseconds;
            if (wait > 0) Thread.Sleep(TimeSpan.FromMilliseconds(wait));
        }
    }

    /// <summary>
    /// Measurement, not a check: the long tail (16 of 64 samples 25× longer, all on instance 0 under round-robin) on
    /// two instances whose steps cost device time (1 ms + 0.2 ms per token), static vs reallocated with the cost
    /// model deciding (gain required, copy or recompute by measured cost); prints both completion times.
    /// </summary>
    [Test, Explicit("a benchmark: run by hand, prints completion times")]
    public void Measure_reallocation_with_independent_device_time()
    {
        var models = new List<SyntheticTargetModel>();
        var requests = ClusterBenchmark.LongTail(64, Vocab, shortTokens: 4, longTokens: 100, tailEvery: 4, SamplingParams.Greedy(0, 0));
        var c = ClusterBenchmark.CompareReallocation(2, _ => NewInstance("off", models, wrap: m => new DeviceTimeModel(m, 1.0, 0.2)), requests,
            new ClusterOptions { Assignment = AssignmentPolicy.RoundRobin }, repeats: 2);
        TestContext.Out.WriteLine($"static {c.Static.WallSeconds:F3} s, reallocated {c.Reallocated.WallSeconds:F3} s, speedup {c.Speedup:F2}x, same outputs {c.SameOutputs}; " +
            $"migrations {c.Reallocated.Migrations}, recomputes {c.Reallocated.Recomputes}; last finish static [{string.Join(", ", c.Static.Instances.Select(i => i.LastFinishSeconds.ToString("F3")))}] " +
            $"reallocated [{string.Join(", ", c.Reallocated.Instances.Select(i => i.LastFinishSeconds.ToString("F3")))}]");
        Assert.That(c.SameOutputs, Is.True);
    }

    [Test]
    public void Length_predictor_learns_per_prompt_and_falls_back_to_prompt_length()
    {
        var predictor = new LengthPredictor(tokensPerPromptToken: 4, smoothing: 0.5);
        var request = new GenerationRequest(0, 0, 0, [1, 2, 3], SamplingParams.Greedy(0, 0), 100);
        Assert.That(predictor.PredictTotal(request), Is.EqualTo(12), "unknown prompt: 4 tokens per prompt token");
        Assert.That(predictor.PredictTotal(request with { MaxNewTokens = 5 }), Is.EqualTo(5), "capped by the limit");
        predictor.Observe([1, 2, 3], 40);
        Assert.That(predictor.PredictTotal(request), Is.EqualTo(40));
        predictor.Observe([1, 2, 3], 60);
        Assert.That(predictor.PredictTotal(request), Is.EqualTo(50), "moving average");
        Assert.That(predictor.PredictRemaining(request, 30), Is.EqualTo(20));
        Assert.That(predictor.PredictRemaining(request, 60), Is.EqualTo(20), "past the prediction: half of what the limit allows");
        Assert.That(predictor.Knows([1, 2]), Is.False);
    }

    /// <summary>A load whose step time is proportional to the batch (<paramref name="secondsPerSample"/> per sample-step).</summary>
    private static InstanceLoad LoadOf(int instance, double secondsPerSample, params double[] remaining) =>
        new(instance, remaining.Select((r, i) => new SampleLoad(instance * 100 + i, r, 0.001)).ToArray(), new StepTime(0, secondsPerSample, 1));

    [Test]
    public void Reallocator_moves_about_half_of_the_excess_longest_first()
    {
        var reallocator = new Reallocator();
        var donor = LoadOf(0, 0.01, 100, 90, 10, 10, 5, 5);
        var plans = reallocator.Plan(donor, [LoadOf(1, 0.01), LoadOf(2, 0.01, 3)]);
        Assert.That(plans, Has.Count.EqualTo(1), "only the drained instance (0 samples) takes work");
        Assert.That(plans[0].To, Is.EqualTo(1));
        // Excess 220 → half 110: the 100 first, then the 10 (the 90 would overshoot).
        Assert.That(plans[0].SampleIds, Is.EqualTo(new long[] { 0, 2 }));
        Assert.That(plans[0].PredictedGainSeconds, Is.EqualTo(0.01 * (220 - 110) - 0.002).Within(1e-9));
    }

    [Test]
    public void Reallocator_keeps_work_when_the_move_costs_more_than_it_gains()
    {
        var donor = new InstanceLoad(0, [new SampleLoad(1, 10, 5.0), new SampleLoad(2, 10, 5.0)], new StepTime(0, 0.01, 1));
        Assert.That(new Reallocator().Plan(donor, [LoadOf(1, 0.01)]), Is.Empty, "saving 0.1 s does not pay a 5 s move");
        Assert.That(new Reallocator(requireGain: false).Plan(donor, [LoadOf(1, 0.01)]), Has.Count.EqualTo(1));
        Assert.That(new Reallocator().Plan(LoadOf(0, 0.01, 50), [LoadOf(1, 0.01)]), Is.Empty, "the donor keeps its last sample");
        Assert.That(new Reallocator().Plan(LoadOf(0, 0, 50, 50), [LoadOf(1, 0.01)]), Is.Empty, "no measured rate, no predicted gain");
        Assert.That(new Reallocator(drainThreshold: 1).Plan(LoadOf(0, 0.01, 50, 50, 50), [LoadOf(1, 0.01, 2)]), Has.Count.EqualTo(1));
    }

    [Test]
    public void Reallocator_sees_that_a_fixed_step_cost_is_not_split()
    {
        // Steps cost 10 ms whatever the batch: the donor's time is its longest sample's steps, so moving that sample
        // only moves the tail elsewhere, and two equally long samples gain nothing by being split.
        var fixedCost = new StepTime(0.01, 0, 1);
        InstanceLoad Load(int k, params double[] r) => new(k, r.Select((x, i) => new SampleLoad(k * 100 + i, x, 0.001)).ToArray(), fixedCost);
        Assert.That(new Reallocator().Plan(Load(0, 100, 5, 5), [Load(1)]), Is.Empty);
        Assert.That(new Reallocator().Plan(Load(0, 100, 100), [Load(1)]), Is.Empty);
        // Half fixed, half per sample: splitting two equal samples saves the per-sample half of one of them.
        var mixed = new StepTime(0.005, 0.005, 1);
        var plans = new Reallocator().Plan(Load(0, 100, 100) with { StepTime = mixed }, [Load(1) with { StepTime = mixed }]);
        Assert.That(plans, Has.Count.EqualTo(1));
        Assert.That(plans[0].PredictedGainSeconds, Is.EqualTo((0.005 * 100 + 0.005 * 200) - (0.005 * 100 + 0.005 * 100) - 0.001).Within(1e-9));
        // Speculation (2 tokens per sample-step) halves the steps and the gain.
        var spec = mixed with { TokensPerSampleStep = 2 };
        Assert.That(new Reallocator().Plan(Load(0, 100, 100) with { StepTime = spec }, [Load(1) with { StepTime = spec }])[0].PredictedGainSeconds,
            Is.EqualTo(0.25 - 0.001).Within(1e-9));
    }

    [Test]
    public void Step_time_fit_separates_the_fixed_and_the_per_sample_part()
    {
        var fit = new StepTimeFit(forgetting: 1);
        Assert.That(fit.Current(1).IsKnown, Is.False);
        fit.Observe(8, 0.008 + 8 * 0.001);
        Assert.That(fit.Current(1), Is.EqualTo(new StepTime(0, 0.002, 1)), "one batch size: proportional");
        foreach (int b in new[] { 1, 4, 16, 32 }) fit.Observe(b, 0.008 + b * 0.001);
        var t = fit.Current(1.5);
        Assert.That(t.FixedSeconds, Is.EqualTo(0.008).Within(1e-9));
        Assert.That(t.SecondsPerSample, Is.EqualTo(0.001).Within(1e-9));
        Assert.That(t.TokensPerSampleStep, Is.EqualTo(1.5));
        Assert.That(t.Seconds([30, 3]), Is.EqualTo((0.008 * 30 + 0.001 * 33) / 1.5).Within(1e-12));
    }
}
