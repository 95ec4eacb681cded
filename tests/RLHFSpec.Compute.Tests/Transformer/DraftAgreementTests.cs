using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// <see cref="DraftAgreement"/> on small random transformers: a draft equal to the target agrees fully (overlap 1,
/// argmaxes equal); two different models give the mean of Σ_x min(p, q) and the argmax agreement that an
/// independent double-precision forward of every sequence gives, at several temperatures and however the sequences
/// are grouped into forwards; the models hold no sample afterwards.
/// </summary>
[TestFixture]
public sealed class DraftAgreementTests
{
    private static DraftAgreement.Sequence[] Sequences(int seed, int count, int vocab)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => new DraftAgreement.Sequence(
            TransformerTestModels.RandomTokens(random, random.Next(1, 7), vocab), TransformerTestModels.RandomTokens(random, random.Next(0, 12), vocab))).ToArray();
    }

    [Test]
    public void A_draft_equal_to_the_target_agrees_fully([Values("cpu", "vulkan")] string backendName)
    {
        var backend = Backends.Get(backendName);
        var config = TransformerTestModels.Config("llama");
        using var weights = TransformerTestModels.Weights(config, seed: 3);
        using var target = new TransformerModel(weights, backend);
        using var draft = new TransformerModel(weights, backend);
        var sequences = Sequences(7, 9, config.VocabSize);
        var result = DraftAgreement.Measure(target, draft, sequences, temperature: 1f);
        Assert.That(result.Positions, Is.EqualTo(sequences.Sum(s => s.Response.Length)));
        Assert.That(result.Sequences, Is.EqualTo(sequences.Count(s => s.Response.Length > 0)));
        Assert.That(result.MeanOverlap, Is.EqualTo(1.0).Within(1e-5));
        Assert.That(result.ArgmaxAgreement, Is.EqualTo(1.0));
        Assert.That((target.ActiveSamples, draft.ActiveSamples), Is.EqualTo((0, 0)), "nothing is left in the caches");
    }

    [Test]
    public void Different_models_give_the_overlap_of_an_independent_forward(
        [Values("cpu", "vulkan")] string backendName, [Values(0f, 0.7f, 1f)] float temperature, [Values(1, 4096)] int maxTokensPerForward)
    {
        var backend = Backends.Get(backendName);
        var targetConfig = TransformerTestModels.Config("qwen2", layers: 2);
        using var targetWeights = TransformerTestModels.Weights(targetConfig, seed: 11);
        // The draft: the target's weights with noise, so the two agree at some positions and not at others.
        using var draftWeights = TransformerTestModels.Weights(targetConfig, seed: 11);
        var noise = new Random(12);
        foreach (var name in draftWeights.Arena.Names)
        {
            var span = draftWeights.Arena.Span(name);
            for (int i = 0; i < span.Length; i++) span[i] += (float)(0.25 * (noise.NextDouble() - 0.5));
        }
        using var target = new TransformerModel(targetWeights, backend);
        using var draft = new TransformerModel(draftWeights, backend);
        var sequences = Sequences(13, 10, targetConfig.VocabSize);

        var targetReference = TransformerTestModels.ReferenceOf(targetWeights);
        var draftReference = TransformerTestModels.ReferenceOf(draftWeights);
        double overlapSum = 0;
        int positions = 0, agree = 0;
        foreach (var s in sequences)
        {
            var all = s.Prompt.Concat(s.Response).ToArray();
            var lp = targetReference.Forward(all);
            var lq = draftReference.Forward(all);
            for (int k = 0; k < s.Response.Length; k++)
            {
                int row = s.Prompt.Length - 1 + k;
                int ap = ArgMax(lp[row]), aq = ArgMax(lq[row]);
                agree += ap == aq ? 1 : 0;
                overlapSum += temperature == 0 ? (ap == aq ? 1 : 0)
                    : Softmax(lp[row], temperature).Zip(Softmax(lq[row], temperature), Math.Min).Sum();
                positions++;
            }
        }
        double expected = overlapSum / positions, expectedAgreement = (double)agree / positions;
        var result = DraftAgreement.Measure(target, draft, sequences, temperature, maxTokensPerForward);
        TestContext.Out.WriteLine($"T = {temperature}: overlap {result.MeanOverlap:F6} (reference {expected:F6}), argmax agreement {result.ArgmaxAgreement:F4} over {result.Positions} positions");
        Assert.That(result.Positions, Is.EqualTo(positions));
        Assert.That(result.MeanOverlap, Is.EqualTo(expected).Within(1e-4));
        Assert.That(result.ArgmaxAgreement, Is.EqualTo(expectedAgreement));
        Assert.That(result.ArgmaxAgreement, Is.InRange(0.2, 0.95), "the models agree at some positions, not at all (the test can tell them apart)");
        if (temperature > 0) Assert.That(result.MeanOverlap, Is.InRange(0.2, 0.98));
        Assert.That((target.ActiveSamples, draft.ActiveSamples), Is.EqualTo((0, 0)));
    }

    [Test]
    public void Bad_input_names_the_problem()
    {
        var config = TransformerTestModels.Config("llama");
        using var weights = TransformerTestModels.Weights(config, seed: 3);
        using var model = new TransformerModel(weights, Backends.Cpu);
        Assert.That(() => DraftAgreement.Measure(model, model, [new([], [1, 2])], 1f), Throws.ArgumentException.With.Message.Contains("empty prompt"));
        Assert.That(() => DraftAgreement.Measure(model, model, [new([1], [config.VocabSize])], 1f), Throws.ArgumentException.With.Message.Contains($"token {config.VocabSize}"));
        Assert.That(() => DraftAgreement.Measure(model, model, [new([1], [2])], -1f), Throws.ArgumentException.With.Message.Contains("temperature"));
        Assert.That(DraftAgreement.Measure(model, model, [new([1], [])], 1f).Positions, Is.EqualTo(0), "an empty response has no position");
    }

    private static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    private static double[] Softmax(double[] logits, double temperature)
    {
        double max = logits.Max() / temperature;
        var e = logits.Select(l => Math.Exp(l / temperature - max)).ToArray();
        double sum = e.Sum();
        return e.Select(v => v / sum).ToArray();
    }
}
