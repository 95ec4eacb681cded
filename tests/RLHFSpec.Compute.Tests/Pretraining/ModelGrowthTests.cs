using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Transformer;

namespace RLHFSpec.Compute.Tests.Pretraining;

/// <summary>
/// Function-preserving growth on random small decoders: the grown model's logits equal the source's (double
/// reference forward of both, and the runtime on the grown weights), over widths, MLP factors, depths, tied and
/// untied heads, biases (Qwen2) and seeds; the duplicated units are not identical (the split breaks symmetry); bad
/// factors fail with a message naming them.
/// </summary>
public class ModelGrowthTests
{
    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var type in new[] { "llama", "qwen2" })
            foreach (var (w, m, layers) in new[] { (1, 1, 2), (2, 2, 2), (2, 1, 5), (3, 2, 4), (2, 3, 7) })
                yield return new TestCaseData(type, w, m, layers, 11 + w * 7 + layers).SetName($"Grown_logits_equal_source({type}, w{w}, m{m}, L{layers})");
    }

    [TestCaseSource(nameof(Cases))]
    public void Grown_logits_equal_source(string type, int width, int intermediate, int layers, int seed)
    {
        var config = TransformerTestModels.Config(type, vocab: 23, layers: 2);
        using var source = TransformerTestModels.Weights(config, seed);
        using var grown = ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(width, intermediate, layers), seed + 100);
        var gc = grown.Config;
        Assert.That((gc.HiddenSize, gc.NumAttentionHeads, gc.NumKeyValueHeads, gc.HeadDim, gc.IntermediateSize, gc.NumHiddenLayers),
            Is.EqualTo((config.HiddenSize * width, config.NumAttentionHeads * width, config.NumKeyValueHeads * width, config.HeadDim,
                config.IntermediateSize * intermediate, layers)));
        var tokens = TransformerTestModels.RandomTokens(new Random(seed), 12, config.VocabSize);
        var expected = TransformerTestModels.ReferenceOf(source).Forward(tokens);
        var actual = TransformerTestModels.ReferenceOf(grown).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++)
            TransformerTestModels.AssertClose(actual[t].Select(v => (float)v).ToArray(), expected[t], 2e-5, $"reference logits of token {t}");
        // The runtime (managed dense layers) on the grown weights agrees too.
        using var model = TransformerTestModels.NewModel(grown, "managed");
        var runtime = TransformerTestModels.Prefill(model, 1, tokens);
        for (int t = 0; t < tokens.Length; t++)
            TransformerTestModels.AssertClose(runtime[t], expected[t], 2e-4, $"runtime logits of token {t}");
    }

    [Test]
    public void Copies_are_not_identical_so_fine_tuning_can_separate_them()
    {
        var config = TransformerTestModels.Config("llama", vocab: 23, layers: 2);
        using var source = TransformerTestModels.Weights(config, 5);
        using var grown = ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(2, 2, 2), 6);
        var q = grown.Arena.Span("model.layers.0.self_attn.q_proj.weight");
        int h = config.HiddenSize;
        // Column j and column H + j read the two copies of unit j: split unequally.
        int differ = 0;
        for (int j = 0; j < h; j++) if (q[j] != q[h + j]) differ++;
        Assert.That(differ, Is.EqualTo(h));
        using var plain = ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(2, 2, 2), 6, splitNoise: 0);
        var p = plain.Arena.Span("model.layers.0.self_attn.q_proj.weight");
        for (int j = 0; j < h; j++) Assert.That(p[j], Is.EqualTo(p[h + j]));
    }

    [Test]
    public void New_layers_are_spread_and_start_as_identities()
    {
        var plan = ModelGrowth.LayerPlan(4, 8);
        Assert.That(plan, Is.EqualTo(new[] { (0, false), (0, true), (1, false), (1, true), (2, false), (2, true), (3, false), (3, true) }));
        Assert.That(ModelGrowth.LayerPlan(2, 5).Count(p => p.IsNew), Is.EqualTo(3));
        Assert.That(ModelGrowth.LayerPlan(3, 3).All(p => !p.IsNew));
        var config = TransformerTestModels.Config("llama", vocab: 23, layers: 2);
        using var source = TransformerTestModels.Weights(config, 8);
        using var grown = ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(1, 1, 4), 9);
        Assert.That(grown.Arena.Span("model.layers.1.self_attn.o_proj.weight").ToArray().All(v => v == 0));
        Assert.That(grown.Arena.Span("model.layers.1.mlp.down_proj.weight").ToArray().All(v => v == 0));
        Assert.That(grown.Arena.Span("model.layers.1.mlp.up_proj.weight").ToArray().Any(v => v != 0));
    }

    [TestCase("llama", 4, 2, new[] { 0, 3 })]
    [TestCase("llama", 4, 1, new[] { 0 })]
    [TestCase("qwen2", 5, 3, new[] { 0, 2, 4 })]
    [TestCase("qwen2", 6, 4, new[] { 0, 2, 3, 5 })]
    public void Fewer_layers_keep_spread_source_layers_bit_for_bit(string type, int sourceLayers, int layers, int[] kept)
    {
        Assert.That(ModelGrowth.LayerPlan(sourceLayers, layers), Is.EqualTo(kept.Select(k => (k, false)).ToArray()));
        var config = TransformerTestModels.Config(type, vocab: 23, layers: sourceLayers);
        using var source = TransformerTestModels.Weights(config, 11);
        using var dropped = ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(1, 1, layers), 3);
        Assert.That(dropped.Config.NumHiddenLayers, Is.EqualTo(layers));
        Assert.That(dropped.Config.HiddenSize, Is.EqualTo(config.HiddenSize));
        foreach (var name in dropped.Arena.Names)
        {
            string from = name;
            if (name.StartsWith("model.layers.", StringComparison.Ordinal))
            {
                int dot = name.IndexOf('.', "model.layers.".Length);
                int l = int.Parse(name["model.layers.".Length..dot]);
                from = $"model.layers.{kept[l]}" + name[dot..];
            }
            Assert.That(dropped.Arena.Span(name).ToArray(), Is.EqualTo(source.Arena.Span(from).ToArray()), name);
        }
    }

    [Test]
    public void Bad_factors_fail_naming_them()
    {
        var config = TransformerTestModels.Config("llama", vocab: 23, layers: 2);
        using var source = TransformerTestModels.Weights(config, 1);
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(0, 1, 2), 1), Throws.ArgumentException.With.Message.Contains("width"));
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(2, 1, 1), 1), Throws.ArgumentException.With.Message.Contains("layers 1 < the source's 2"));
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(1, 1, 0), 1), Throws.ArgumentException.With.Message.Contains("layers must be >= 1"));
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(1, 1, 2), 1, splitNoise: 1), Throws.ArgumentException.With.Message.Contains("split noise"));
    }
}

/// <summary>
/// Pretraining that starts from a grown model (the medium set's recipe, on tiny shapes): the first step's loss equals
/// the source's on the same batch (growth preserves the function), the summary records the source, and a grown shape
/// that does not match the spec's config fails naming both.
/// </summary>
public class GrownPretrainingTests
{
    private static PretrainModelSpec Spec(string source, int width, int layers, int steps) => new()
    {
        Name = Pretrainer.PolicyName, Steps = steps, PeakLearningRate = 1e-3, MinLearningRate = 1e-4, WarmupSteps = 1, TokensPerBatch = 128,
        Config = PretrainModelSpec.LlamaConfig(ArithmeticTokenizer.Create(), hidden: 16 * width, layers: layers, heads: 2 * width, kvHeads: width,
            intermediate: 24 * width, maxPositions: 256),
        GrowFrom = new PretrainModelSpec.GrowthStart(source, new ModelGrowth.GrowthFactors(width, width, layers)),
    };

    [Test]
    public void Fine_tuning_a_grown_model_starts_at_the_source_loss()
    {
        using var folder = new Tests.Model.FormatsTestFolder();
        var tokenizer = ArithmeticTokenizer.Create();
        var options = new PretrainOptions { Seed = 3, Threads = 1, MaxTrainTokens = 40, EvalPrompts = 0 };
        string source = Path.Combine(folder.Path, "source");
        Pretrainer.Run(source, options with
        {
            Models = new[]
            {
                new PretrainModelSpec
                {
                    Name = Pretrainer.PolicyName, Steps = 20, PeakLearningRate = 3e-2, MinLearningRate = 3e-3, WarmupSteps = 2, TokensPerBatch = 128,
                    Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 16, layers: 1, heads: 2, kvHeads: 1, intermediate: 24, maxPositions: 256),
                },
            },
        });
        string sourcePolicy = Path.Combine(source, Pretrainer.PolicyName);
        // Identity growth (a copy) and real growth see the same first batch: the same loss before any update.
        var same = Pretrainer.Run(Path.Combine(folder.Path, "copy"), options with { Models = new[] { Spec(sourcePolicy, 1, 1, 1) } }).Models.Single();
        var grown = Pretrainer.Run(Path.Combine(folder.Path, "grown"), options with { Models = new[] { Spec(sourcePolicy, 2, 3, 1) } }).Models.Single();
        Assert.That(grown.InitialLoss, Is.EqualTo(same.InitialLoss).Within(1e-4));
        Assert.That(grown.Source, Does.Contain("grown from").And.Contain("width x2").And.Contain("layers 3"));
        Assert.That(grown.Parameters, Is.GreaterThan(same.Parameters * 5));
        using var saved = Checkpoint.Load(Path.Combine(folder.Path, "grown", Pretrainer.PolicyName));
        Assert.That((saved.Config.HiddenSize, saved.Config.NumHiddenLayers), Is.EqualTo((32, 3)));
        Assert.That(PretrainSummary.Load(Path.Combine(folder.Path, "grown")).Models.Single().Source, Is.EqualTo(grown.Source));

        var wrong = Spec(sourcePolicy, 2, 3, 1) with { Config = Spec(sourcePolicy, 3, 3, 1).Config };
        Assert.That(() => Pretrainer.Run(Path.Combine(folder.Path, "wrong"), options with { Models = new[] { wrong } }),
            Throws.ArgumentException.With.Message.Contains("gives hidden 32").And.Message.Contains("not the config's hidden 48"));
        Assert.That(() => Pretrainer.Run(Path.Combine(folder.Path, "missing"), options with { Models = new[] { Spec(Path.Combine(folder.Path, "nowhere"), 2, 3, 1) } }),
            Throws.ArgumentException.With.Message.Contains("growth source"));
    }

    [Test]
    public void Set_folders_and_unknown_sets()
    {
        Assert.That(DefaultModels.SetFolder("/m", null), Is.EqualTo("/m"));
        Assert.That(DefaultModels.SetFolder("/m", "default"), Is.EqualTo("/m"));
        Assert.That(DefaultModels.SetFolder("/m", "medium"), Is.EqualTo(Path.Combine("/m", "medium")));
        Assert.That(() => DefaultModels.SetFolder("/m", "large"), Throws.ArgumentException.With.Message.EqualTo("--set large: no such model set (sets: default, medium)"));
    }
}
