using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// The generation stage as one call (<see cref="Generator"/>) on random transformers: the start-up cost profile is
/// measured (positive, growing with tokens), saved and reloaded frozen; with a frozen profile the adaptive
/// selector's decisions repeat exactly; adaptive output equals off at temperature 0; bad settings are refused.
/// </summary>
[TestFixture]
public sealed class GeneratorTests
{
    private static int[][] Prompts(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var unit = Enumerable.Range(0, random.Next(2, 4)).Select(_ => random.Next(1, 29)).ToArray();
            return Enumerable.Repeat(unit, 3).SelectMany(u => u).ToArray();
        }).ToArray();
    }

    [Test]
    public void The_cost_profile_is_measured_and_a_frozen_profile_makes_adaptive_decisions_repeat()
    {
        using var folder = new FormatsTestFolder();
        using var weights = Weights(Config("qwen2", vocab: 29), 5);
        using var draftWeights = Weights(Config("qwen2", vocab: 29, layers: 1), 6);
        var profile = folder.File("cost.json");
        var requests = GenerationRequests.For(Prompts(3, 1), samplesPerPrompt: 3, maxNewTokens: 16, temperature: 0.8f, topP: 1f, seed: 9);

        (GeneratorRunResult Outcome, CostModel Cost) RunOnce()
        {
            using var policy = NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
            using var draft = NewModel(draftWeights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
            var generator = new Generator(policy, draft, new GeneratorSettings { Strategy = StrategyMode.Adaptive, CostProfilePath = profile, ProfileMaxTokens = 32, StopTokens = new HashSet<int> { 0 } });
            var outcome = generator.Run(requests);
            Assert.That(policy.ActiveSamples, Is.EqualTo(0), "profiling and generation release every sample");
            return (outcome, generator.Cost!);
        }

        var (first, measured) = RunOnce();
        Assert.That(File.Exists(profile), "the measured profile was saved");
        Assert.That(measured.Target.Predict(1), Is.GreaterThan(0));
        Assert.That(measured.Target.Predict(32), Is.GreaterThan(measured.Target.Predict(1)), "32 tokens cost more than 1");
        Assert.That(measured.Draft.Predict(1), Is.GreaterThan(0), "the draft model was profiled");

        var (second, loaded) = RunOnce();
        var (third, _) = RunOnce();
        Assert.That(loaded.Frozen, Is.True);
        Assert.That(third.Stats.StrategyHistogram, Is.EqualTo(second.Stats.StrategyHistogram), "same frozen profile, same decisions");
        Assert.That(third.ChoicesByBatchSize.Keys, Is.EqualTo(second.ChoicesByBatchSize.Keys));
        for (int i = 0; i < requests.Length; i++)
            Assert.That(third.Results[i].Tokens, Is.EqualTo(second.Results[i].Tokens), $"sample {i}");
        Assert.That(first.Results.Select(r => r.Request.SampleId), Is.EqualTo(requests.Select(r => r.SampleId)), "results in request order");
    }

    [Test]
    public void Adaptive_greedy_output_equals_off()
    {
        using var weights = Weights(Config("llama", vocab: 29), 7);
        var requests = GenerationRequests.For(Prompts(4, 2), samplesPerPrompt: 2, maxNewTokens: 20, temperature: 0, topP: 1f, seed: 0);
        int[][] RunWith(string strategy)
        {
            using var policy = NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
            using var draft = NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
            var generator = new Generator(policy, draft, new GeneratorSettings { Strategy = StrategyMode.Parse(strategy), ProfileMaxTokens = 16 });
            return generator.Run(requests).Results.Select(r => r.Tokens).ToArray();
        }
        var off = RunWith("off");
        Assert.That(RunWith("adaptive"), Is.EqualTo(off));
        Assert.That(RunWith("chain:3"), Is.EqualTo(off));
    }

    [Test]
    public void Cluster_instances_draft_from_every_earlier_response()
    {
        using var weights = Weights(Config("llama", vocab: 29), 7);
        var requests = GenerationRequests.For(Prompts(4, 3), samplesPerPrompt: 2, maxNewTokens: 20, temperature: 0, topP: 1f, seed: 0);
        using var policy = NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
        var models = new List<TransformerModel>();
        try
        {
            var generator = new Generator(policy, null, new GeneratorSettings { Strategy = StrategyMode.Parse("suffix:4") });
            (ITargetModel, ITargetModel?) Instance(int k)
            {
                while (models.Count <= k) models.Add(NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20));
                return (models[k], null);
            }
            var options = new Compute.Generation.Cluster.ClusterOptions { Reallocate = false };
            var first = generator.RunCluster(requests, 2, Instance, options);
            Assert.That(generator.ClusterSuffixes.Select(s => s.Prompts), Is.EqualTo(new[] { 4, 4 }), "each instance indexed every prompt's responses");
            var second = generator.RunCluster(requests, 2, Instance, options);
            var off = new Generator(policy, null, new GeneratorSettings { Strategy = StrategyMode.Of(Strategy.Off) }).Run(requests).Results.Select(r => r.Tokens).ToArray();
            Assert.That(first.Results.Select(r => r.Tokens), Is.EqualTo(off));
            Assert.That(second.Results.Select(r => r.Tokens), Is.EqualTo(off));
            Assert.That(second.Stats.DraftTokensAccepted, Is.GreaterThan(first.Stats.DraftTokensAccepted), "the second run drafts from the first's responses");
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    [Test]
    public void The_step_trace_holds_one_row_per_decode_step_with_the_plan_and_its_time()
    {
        using var folder = new FormatsTestFolder();
        using var weights = Weights(Config("llama", vocab: 29), 11);
        using var draftWeights = Weights(Config("llama", vocab: 29, layers: 1), 12);
        var requests = GenerationRequests.For(Prompts(2, 3), samplesPerPrompt: 3, maxNewTokens: 12, temperature: 0.7f, topP: 1f, seed: 4);
        string path = folder.File("steps.csv");
        using var policy = NewModel(weights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
        using var draft = NewModel(draftWeights, Backends.Cpu, blockSize: 8, budget: 4 << 20);
        GeneratorRunResult outcome;
        using (var trace = new StepTraceFile(path) { Run = "adaptive, first" })
        {
            outcome = new Generator(policy, draft, new GeneratorSettings { Strategy = StrategyMode.Adaptive, ProfileMaxTokens = 16, StepTrace = trace }).Run(requests);
            Assert.That(File.Exists(path), Is.False, "nothing at the path before the trace is complete");
            trace.Complete();
        }
        var lines = File.ReadAllLines(path);
        Assert.That(lines[0], Is.EqualTo(StepTraceFile.Header));
        // Quoted fields (the run, the strategy) may hold commas: split outside quotes only.
        var rows = lines.Skip(1).Select(l => System.Text.RegularExpressions.Regex.Split(l, ",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)")).ToArray();
        Assert.That(rows.All(r => r.Length == StepTraceFile.Header.Split(',').Length && r[0] == "\"adaptive, first\""), "every row has every column");
        Assert.That(rows, Has.Length.EqualTo(outcome.Stats.Steps), "one row per decode step");
        Assert.That(rows.Select(r => long.Parse(r[2])), Is.EqualTo(Enumerable.Range(1, rows.Length).Select(i => (long)i)), "steps numbered in order");
        Assert.That(rows.Sum(r => long.Parse(r[8])), Is.EqualTo(outcome.Stats.TokensGenerated - requests.Length), "the rows' emitted tokens are every token but each sample's first, which its prefill emits");
        Assert.That(rows.All(r => double.Parse(r[11], System.Globalization.CultureInfo.InvariantCulture) > 0), "every step was timed");
        Assert.That(rows.All(r => double.Parse(r[9], System.Globalization.CultureInfo.InvariantCulture) > 0), "adaptive predicts every step");
        // The runner-up is another candidate (none only where every draft was trimmed away, e.g. a sample's last token),
        // predicted no faster than the choice (the fastest-predicted one, but for an exploration's cap).
        Assert.That(rows.Count(r => r[16].Trim('"').Length > 0), Is.GreaterThan(rows.Length / 2), "most rows name another candidate");
        Assert.That(rows.All(r => r[16] != r[3]), "the runner-up is not the choice");
        Assert.That(rows.Where(r => r[4] == "0").All(r => double.Parse(r[17], System.Globalization.CultureInfo.InvariantCulture)
            <= double.Parse(r[14], System.Globalization.CultureInfo.InvariantCulture) * (1 + 1e-9)), "no runner-up predicted faster than a non-exploring choice");
        Assert.That(File.Exists(path + ".tmp"), Is.False);

        string failed = folder.File("failed.csv");
        using (var trace = new StepTraceFile(failed)) trace.Record(new StepRecord(0, 1, "off", false, 1, 1, 1, 1, 0, 1, 0.1, 0, 0.1, 0, 0));
        Assert.That(File.Exists(failed) || File.Exists(failed + ".tmp"), Is.False, "a trace disposed without completing leaves nothing");
    }

    [Test]
    public void Bad_settings_are_refused_naming_the_option()
    {
        using var weights = Weights(Config("llama", vocab: 29), 7);
        using var policy = NewModel(weights, Backends.Cpu);
        Assert.That(Assert.Throws<ArgumentException>(() => new Generator(policy, null, new GeneratorSettings { Strategy = StrategyMode.Parse("chain:4") }))!.Message, Does.Contain("draft model"));
        Assert.That(Assert.Throws<ArgumentException>(() => StrategyMode.Parse("chian:4", "--strategy"))!.Message, Does.Contain("--strategy"));
        Assert.Throws<ArgumentException>(() => new Generator(policy, null, new GeneratorSettings { MaxBatch = 0 }));
        Assert.Throws<ArgumentException>(() => GenerationRequests.For([[1]], 0, 5, 1f, 1f, 0));
        Assert.Throws<ArgumentException>(() => GenerationRequests.For([[1]], 1, 5, -1f, 1f, 0));
        Assert.Throws<ArgumentException>(() => GenerationRequests.For([[1]], 1, 5, 1f, 0f, 0));
    }
}
