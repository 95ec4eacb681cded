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

    [Test]
    public void Bad_factors_fail_naming_them()
    {
        var config = TransformerTestModels.Config("llama", vocab: 23, layers: 2);
        using var source = TransformerTestModels.Weights(config, 1);
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(0, 1, 2), 1), Throws.ArgumentException.With.Message.Contains("width"));
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(1, 1, 1), 1), Throws.ArgumentException.With.Message.Contains("layers 1"));
        Assert.That(() => ModelGrowth.Grow(source, new ModelGrowth.GrowthFactors(1, 1, 2), 1, splitNoise: 1), Throws.ArgumentException.With.Message.Contains("split noise"));
    }
}
