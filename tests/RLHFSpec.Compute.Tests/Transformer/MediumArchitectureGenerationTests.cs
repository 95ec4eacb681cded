using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// Temperature 0 on a shrunken copy of the medium set (<see cref="Pretrainer.MediumModelSpecs"/>), made the way the
/// medium set is made, so CI needs no pretrained medium set: the default policy's shape with its heads cut to a
/// quarter is pretrained a few steps, grown by the medium set's own growth factors (so the same layer count, layer
/// plan with zero-output new layers, head_dim and query/KV grouping as the medium policy, with 2 KV heads instead of
/// 8) and fine-tuned a few steps; the drafts are the medium set's draft specs (the default drafts, trained a few
/// steps, then distilled from the shrunken medium policy a few steps). Every fixed
/// strategy with each draft, the suffix proposer's, and adaptive write exactly the tokens of <c>off</c>, on the CPU
/// backend and on Vulkan (lavapipe here).
/// </summary>
[TestFixture]
public sealed class MediumArchitectureGenerationTests
{
    /// <summary>KV heads of the shrunken medium policy (the medium policy has 8).</summary>
    private const int KvHeads = 2;

    private const int Steps = 60;

    private FormatsTestFolder _folder = null!;
    private string _medium = "";

    [OneTimeSetUp]
    public void MakeShrunkenMediumSet()
    {
        _folder = new FormatsTestFolder();
        var tokenizer = ArithmeticTokenizer.Create();
        var options = new PretrainOptions { Steps = Steps, EvalPrompts = 0, Threads = 2 };
        string defaults = Path.Combine(_folder.Path, "default");
        var medium = Pretrainer.MediumModelSpecs(tokenizer, defaults);
        var grow = medium[0].GrowFrom ?? throw new InvalidOperationException("the medium policy is grown");
        var target = medium[0].Config;
        int shrink = target.NumKeyValueHeads / KvHeads;
        var defaultSpecs = Pretrainer.DefaultModelSpecs(tokenizer);
        var source = defaultSpecs[0];
        Assert.That((source.Config.NumKeyValueHeads % shrink, source.Config.NumAttentionHeads % shrink, source.Config.IntermediateSize % shrink), Is.EqualTo((0, 0, 0)),
            "the default policy's heads and MLP divide by the shrink factor");
        var smallSource = source.Config with
        {
            NumAttentionHeads = source.Config.NumAttentionHeads / shrink,
            NumKeyValueHeads = source.Config.NumKeyValueHeads / shrink,
            HiddenSize = source.Config.HiddenSize / shrink,
            HeadDim = source.Config.HeadDim,
            IntermediateSize = source.Config.IntermediateSize / shrink,
        };
        // The default set with the shrunken policy: the medium drafts start from its drafts.
        Pretrainer.Run(defaults, options with { Models = [source with { Config = smallSource }, .. defaultSpecs.Skip(1)] });
        var shrunk = ModelGrowth.GrownConfig(smallSource, grow.Factors);
        Assert.That((shrunk.NumHiddenLayers, shrunk.HeadDim, shrunk.NumAttentionHeads / shrunk.NumKeyValueHeads, shrunk.NumKeyValueHeads),
            Is.EqualTo((target.NumHiddenLayers, target.HeadDim, target.NumAttentionHeads / target.NumKeyValueHeads, KvHeads)),
            "the shrunken policy has the medium policy's layers, head_dim and grouping");
        _medium = Path.Combine(_folder.Path, Pretrainer.MediumSetName);
        // The layer-skip draft is cut from the (here shrunken) default policy: its config follows that policy's.
        var drafts = medium.Skip(1).Select(d => d.Name == Pretrainer.DraftSkipName ? d with { Config = smallSource with { NumHiddenLayers = d.Config.NumHiddenLayers } } : d);
        Pretrainer.Run(_medium, options with { Models = [medium[0] with { Config = shrunk }, .. drafts] });
        TestContext.Out.WriteLine($"shrunken medium policy: hidden {shrunk.HiddenSize}, {shrunk.NumHiddenLayers} layers, {shrunk.NumAttentionHeads}/{shrunk.NumKeyValueHeads} heads of {shrunk.HeadDim}, intermediate {shrunk.IntermediateSize}");
    }

    [OneTimeTearDown]
    public void Cleanup() => _folder.Dispose();

    private static readonly string[] Strategies = ["suffix:4", "suffix-tree:4,2,8", "chain:3", "tree:3,2,6", "adaptive"];

    [Test]
    public void Greedy_output_of_every_strategy_equals_off_on_the_shrunken_medium_set([Values("cpu", "vulkan")] string backendName)
    {
        var backend = Backends.Get(backendName);
        using var checkpoint = Checkpoint.Load(DefaultModels.PolicyFolder(_medium));
        using var policyWeights = TransformerWeights.FromCheckpoint(checkpoint);
        var stops = checkpoint.StopTokenIds();
        var task = new ArithmeticTask(20261206);
        var prompts = Enumerable.Range(0, 4).Select(_ => checkpoint.Tokenizer.Encode(task.Next().Prompt)).ToArray();
        // Two greedy samples per prompt: siblings feed the suffix proposer (identical at T = 0, so it is accepted).
        var requests = GenerationRequests.For(prompts, samplesPerPrompt: 2, maxNewTokens: 32, temperature: 0, topP: 1f, seed: 5);

        int[][] RunWith(string strategy, TransformerWeights? draftWeights, out GenerationStats stats)
        {
            var runtime = new TransformerOptions { KvMemoryBudgetBytes = 32L << 20 };
            using var policy = new TransformerModel(policyWeights, backend, runtime);
            using var draft = draftWeights is null ? null : new TransformerModel(draftWeights, backend, runtime);
            var generator = new Generator(policy, draft, new GeneratorSettings { Strategy = StrategyMode.Parse(strategy), StopTokens = stops, ProfileMaxTokens = 8 });
            var outcome = generator.Run(requests);
            Assert.That(policy.ActiveSamples, Is.EqualTo(0), $"{strategy}: finished samples release their KV");
            stats = outcome.Stats;
            return outcome.Results.Select(r => r.Tokens).ToArray();
        }

        var off = RunWith("off", null, out _);
        Assert.That(off.Sum(t => t.Length), Is.GreaterThan(requests.Length), "the policy writes something");
        foreach (var t in off.Take(3)) TestContext.Out.WriteLine($"off: {checkpoint.Tokenizer.Decode(t)}");
        foreach (var draftName in new[] { Pretrainer.DraftSmallName, Pretrainer.DraftTinyName, Pretrainer.DraftSkipName })
        {
            using var draftCheckpoint = Checkpoint.Load(DefaultModels.DraftFolder(_medium, draftName));
            Checkpoint.CheckCompatibleDraft(checkpoint, draftCheckpoint);
            using var draftWeights = TransformerWeights.FromCheckpoint(draftCheckpoint);
            // The suffix proposer needs no draft model: run it once, not per draft.
            foreach (var strategy in draftName == Pretrainer.DraftSmallName ? Strategies : Strategies.Where(s => !s.StartsWith("suffix", StringComparison.Ordinal)))
            {
                var tokens = RunWith(strategy, draftWeights, out var stats);
                for (int i = 0; i < requests.Length; i++)
                    Assert.That(tokens[i], Is.EqualTo(off[i]), $"{backendName}: {strategy} with {draftName}: sample {i}");
                TestContext.Out.WriteLine($"{backendName} {strategy} ({draftName}): {stats.DraftTokensAccepted} draft tokens accepted in {stats.Steps} steps");
            }
        }
    }
}
