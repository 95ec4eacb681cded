using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// Temperature 0 on the default models (the policy and both drafts the main job uses, on default-task prompts):
/// every fixed strategy with each proposer, and adaptive, writes exactly the tokens of <c>off</c>. When the default
/// models folder holds a complete pretrained set (a developer's machine after <c>rlhfspec pretrain</c>) those models
/// are used; otherwise (a fresh CI clone) the same pretrainer trains the default architectures for a few steps into
/// a temporary folder, so the test runs everywhere on models of the shipped shapes and tokenizer.
/// </summary>
[TestFixture]
public sealed class DefaultModelsGenerationTests
{
    private FormatsTestFolder? _temporary;
    private string _folder = "";
    private bool _pretrainedHere;

    [OneTimeSetUp]
    public void FindOrPretrainDefaultModels()
    {
        if (DefaultModels.Exists(DefaultModels.Folder))
        {
            _folder = DefaultModels.Folder;
            return;
        }
        _temporary = new FormatsTestFolder();
        _folder = _temporary.Path;
        _pretrainedHere = true;
        Pretrainer.Run(_folder, new PretrainOptions { Steps = 12, EvalPrompts = 0, Threads = 2 });
    }

    [OneTimeTearDown]
    public void Cleanup() => _temporary?.Dispose();

    private static readonly string[] Strategies = ["suffix:4", "suffix-tree:4,2,8", "chain:3", "tree:3,2,6", "adaptive"];

    [Test]
    public void Greedy_output_of_every_strategy_equals_off_on_the_default_models([Values(Pretrainer.DraftSmallName, Pretrainer.DraftTinyName)] string draftName)
    {
        TestContext.Out.WriteLine(_pretrainedHere ? $"default architectures pretrained 12 steps into {_folder}" : $"pretrained default models from {_folder}");
        using var checkpoint = Checkpoint.Load(DefaultModels.PolicyFolder(_folder));
        using var draftCheckpoint = Checkpoint.Load(DefaultModels.DraftFolder(_folder, draftName));
        Checkpoint.CheckCompatibleDraft(checkpoint, draftCheckpoint);
        using var policyWeights = TransformerWeights.FromCheckpoint(checkpoint);
        using var draftWeights = TransformerWeights.FromCheckpoint(draftCheckpoint);
        var stops = checkpoint.StopTokenIds();
        var task = new ArithmeticTask(20261129);
        var prompts = Enumerable.Range(0, 5).Select(_ => checkpoint.Tokenizer.Encode(task.Next().Prompt)).ToArray();
        // Two greedy samples per prompt: siblings feed the suffix proposer (identical at T = 0, so it is accepted).
        var requests = GenerationRequests.For(prompts, samplesPerPrompt: 2, maxNewTokens: 40, temperature: 0, topP: 1f, seed: 3);

        int[][] RunWith(string strategy, out GenerationStats stats)
        {
            var runtime = new TransformerOptions { KvMemoryBudgetBytes = 32L << 20 };
            using var policy = new TransformerModel(policyWeights, Backends.Cpu, runtime);
            using var draft = new TransformerModel(draftWeights, Backends.Cpu, runtime);
            var generator = new Generator(policy, strategy == "off" ? null : draft,
                new GeneratorSettings { Strategy = StrategyMode.Parse(strategy), StopTokens = stops, ProfileMaxTokens = 16 });
            var outcome = generator.Run(requests);
            Assert.That(policy.ActiveSamples, Is.EqualTo(0), $"{strategy}: finished samples release their KV");
            stats = outcome.Stats;
            return outcome.Results.Select(r => r.Tokens).ToArray();
        }

        var off = RunWith("off", out _);
        Assert.That(off.Sum(t => t.Length), Is.GreaterThan(requests.Length), "the policy writes something");
        foreach (var strategy in Strategies)
        {
            var tokens = RunWith(strategy, out var stats);
            for (int i = 0; i < requests.Length; i++)
                Assert.That(tokens[i], Is.EqualTo(off[i]), $"{strategy} with {draftName}: sample {i}");
            TestContext.Out.WriteLine($"{strategy}: {stats.DraftTokensAccepted} draft tokens accepted in {stats.Steps} steps");
        }
    }
}
