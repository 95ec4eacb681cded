using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Rlhf;

/// <summary>
/// Pieces of the RLHF loop: the training batch layout, the draft-refresh loss (value and gradients against finite
/// differences; a refresh lowers the KL and raises the draft's expected acceptance), log-probs of the training graph
/// against the generation runtime's, and the config's error messages.
/// </summary>
public sealed class RlhfPartsTests
{
    [Test]
    public void A_sequence_batch_shifts_targets_pads_right_and_masks_only_response_targets()
    {
        var b = SequenceBatch.From([([5, 6, 7], [8, 9]), ([1], [2])], pad: 0);
        Assert.That(b.Length, Is.EqualTo(4));
        Assert.That(b.InputIds, Is.EqualTo(new long[] { 5, 6, 7, 8, 1, 0, 0, 0 }));
        Assert.That(b.Targets, Is.EqualTo(new long[] { 6, 7, 8, 9, 2, 0, 0, 0 }));
        Assert.That(b.Positions, Is.EqualTo(new long[] { 0, 1, 2, 3, 0, 0, 0, 0 }));
        Assert.That(b.AttentionMask, Is.EqualTo(new float[] { 1, 1, 1, 1, 1, 0, 0, 0 }));
        Assert.That(b.LossMask, Is.EqualTo(new float[] { 0, 0, 1, 1, 1, 0, 0, 0 }));
        var dense = b.Scatter([[0.5f, 0.25f], [3f]]);
        Assert.That(dense, Is.EqualTo(new float[] { 0, 0, 0.5f, 0.25f, 3, 0, 0, 0 }));
        Assert.That(b.Gather(dense, 0), Is.EqualTo(new[] { 0.5f, 0.25f }));
        Assert.Throws<ArgumentException>(() => SequenceBatch.From([([], [1])]));
    }

    [Test]
    public void The_draft_refresh_loss_gradients_match_finite_differences()
    {
        var spec = GradientDecoderTrainingGraphTests.Qwen2Like;
        var g = DraftDistiller.LossGraph(spec, ElementType.Double);
        var all = GradientDecoderTrainingGraphTests.Sequences(spec, 11);
        var inputs = new[] { DecoderTrainingGraph.InputIds, DecoderTrainingGraph.PositionIds, DecoderTrainingGraph.AttentionMask, DecoderTrainingGraph.LossMask }
            .ToDictionary(n => n, n => all[n]);
        int b = GradientDecoderTrainingGraphTests.B, t = GradientDecoderTrainingGraphTests.Tn;
        var rng = new Random(3);
        inputs[DraftDistiller.TeacherLogits] = T(Rand(rng, b * t * spec.VocabSize, -2, 2), b, t, spec.VocabSize);
        foreach (var (name, data) in GradientDecoderTrainingGraphTests.RandomWeights(spec, 11))
            inputs[name] = T(data, spec.Tensors().First(x => x.Name == name).Shape);
        GradientDecoderTrainingGraphTests.CheckGradients(spec, g, inputs);
    }

    [Test]
    public void A_draft_refresh_moves_the_draft_toward_the_policy()
    {
        var teacherConfig = Transformer.TransformerTestModels.Config("llama", vocab: 23);
        using var teacher = Transformer.TransformerTestModels.Weights(teacherConfig, 1);
        using var draft = TransformerWeights.Random(Transformer.TransformerTestModels.Config("llama", vocab: 23, layers: 1), 2, std: 0.1);
        var options = new OnnxSessionOptions { IntraOpThreads = 1 };
        using var teacherGraphs = new PolicyGraphs(teacher.Spec, options);
        using var draftGraphs = new PolicyGraphs(draft.Spec, options);
        var rng = new Random(4);
        var batch = SequenceBatch.From(Enumerable.Range(0, 4).Select(_ =>
            (Enumerable.Range(0, 3).Select(_ => rng.Next(23)).ToArray(), Enumerable.Range(0, 6).Select(_ => rng.Next(23)).ToArray())).ToArray());
        var teacherLogits = teacherGraphs.FullLogits(teacher.Arena, batch);
        using var distiller = new DraftDistiller(draft.Spec, draft.Arena, options, new AdamWOptions { Schedule = LearningRateSchedule.Constant(1e-2), WeightDecay = 0 });
        var stats = distiller.Refresh(batch, teacherLogits, () => draftGraphs.FullLogits(draft.Arena, batch), steps: 25);
        Assert.That(stats.KlAfter, Is.LessThan(0.8 * stats.KlBefore), $"KL {stats.KlBefore:F3} → {stats.KlAfter:F3}");
        Assert.That(stats.AcceptanceAfter, Is.GreaterThan(stats.AcceptanceBefore), $"acceptance {stats.AcceptanceBefore:F3} → {stats.AcceptanceAfter:F3}");
        var (kl, acceptance) = DraftDistiller.Compare(batch, teacherLogits, teacherLogits);
        Assert.That(kl, Is.EqualTo(0).Within(1e-9));
        Assert.That(acceptance, Is.EqualTo(1).Within(1e-9), "a draft equal to the policy is always accepted");
    }

    [Test]
    public void Training_graph_log_probs_equal_the_generation_runtime_log_softmax()
    {
        var config = Transformer.TransformerTestModels.Config("qwen2", vocab: 23);
        using var weights = Transformer.TransformerTestModels.Weights(config, 5);
        using var graphs = new PolicyGraphs(weights.Spec, new OnnxSessionOptions { IntraOpThreads = 1 });
        int[] prompt = [3, 7, 1], response = [4, 4, 9, 2];
        var batch = SequenceBatch.From([(prompt, response)]);
        var logp = graphs.LogProbs(weights.Arena, batch);
        using var model = Transformer.TransformerTestModels.NewModel(weights, Backends.Cpu);
        var logits = Transformer.TransformerTestModels.Prefill(model, 1, [.. prompt, .. response]);
        for (int k = 0; k < response.Length; k++)
        {
            var row = logits[prompt.Length - 1 + k];
            double max = row.Max(), z = row.Sum(v => Math.Exp(v - max));
            double expected = row[response[k]] - max - Math.Log(z);
            Assert.That(logp[batch.ResponseStart[0] + k], Is.EqualTo(expected).Within(1e-4), $"response token {k}");
        }
    }

    [Test]
    public void Config_errors_name_the_key_and_value()
    {
        using var folder = new FormatsTestFolder();
        var path = folder.File("c.json");
        File.WriteAllText(path, """{"iterations": 3, "samples_per_promt": 4}""");
        Assert.That(Assert.Throws<InvalidDataException>(() => RlhfConfig.Load(path))!.Message, Does.Contain("samples_per_promt").And.Contain("unknown key"));
        File.WriteAllText(path, """{"iterations": "many"}""");
        Assert.That(Assert.Throws<InvalidDataException>(() => RlhfConfig.Load(path))!.Message, Does.Contain("iterations"));
        File.WriteAllText(path, """{"iterations": 3, "speculation": "off", "learning_rate": 1e-4}""");
        var c = RlhfConfig.Load(path);
        Assert.That((c.Iterations, c.Speculation, c.LearningRate), Is.EqualTo((3, StrategyMode.Off, 1e-4)));
        Assert.That(c.With("--samples-per-prompt", "6").SamplesPerPrompt, Is.EqualTo(6));
        Assert.That(Assert.Throws<ArgumentException>(() => c.With("--samples-per-prompt", "six"))!.Message, Does.Contain("samples-per-prompt"));
        Assert.That(Assert.Throws<ArgumentException>(() => c.With("--bogus", "1"))!.Message, Does.Contain("unknown setting"));
        Assert.That(Assert.Throws<ArgumentException>(() => (c with { MinibatchSize = -2 }).Validate())!.Message, Does.Contain("minibatch_size: -2"));
        Assert.That(Assert.Throws<ArgumentException>(() => (c with { MicroBatchSize = 0 }).Validate())!.Message, Does.Contain("micro_batch_size: 0, must be >= 1"));
        Assert.That(c.With("--micro-batch-size", "4").MicroBatchSize, Is.EqualTo(4));
        Assert.That((c with { MicroBatchSize = 64 }).Validate, Throws.Nothing, "a micro-batch above the minibatch: no split");
        Assert.That(Assert.Throws<ArgumentException>(() => c.With("--speculation", "chian:3"))!.Message, Does.Contain("speculation"));
        Assert.That(Assert.Throws<ArgumentException>(() => c.With("--algorithm", "dpo"))!.Message, Does.Contain("algorithm: 'dpo' is not one of grpo, ppo"));
        Assert.That(Assert.Throws<ArgumentException>(() => c.With("--reallocate", "yes"))!.Message, Does.Contain("reallocate: 'yes' is not one of on, off"));
        Assert.That(c.With("--algorithm", "ppo").With("--reallocate", "on").With("--speculation", "chain:4"),
            Is.EqualTo(c with { Algorithm = RlhfAlgorithm.Ppo, Reallocate = true, Speculation = StrategyMode.Parse("chain:4") }));
        File.WriteAllText(path, """{"algorithm": "dpo"}""");
        Assert.That(Assert.Throws<ArgumentException>(() => RlhfConfig.Load(path))!.Message, Does.Contain("algorithm: 'dpo' is not one of grpo, ppo"));
        Assert.That(c.ToJson(), Does.Contain("\"speculation\": \"off\"").And.Contain("\"algorithm\": \"grpo\"").And.Contain("\"reallocate\": \"off\""));
        var round = folder.File("r.json");
        File.WriteAllText(round, c.ToJson());
        Assert.That(RlhfConfig.Load(round), Is.EqualTo(c));
        // The derived DenseKind is not written; a config.json written before (with "DenseKind": N) still loads, as the same settings.
        Assert.That(c.ToJson(), Does.Not.Contain("DenseKind"));
        Assert.That(RlhfConfig.Keys, Does.Not.Contain("DenseKind"));
        File.WriteAllText(path, c.ToJson().Replace("\"dense\":", "\"DenseKind\": 2,\n  \"dense\":"));
        Assert.That(File.ReadAllText(path), Does.Contain("\"DenseKind\": 2"));
        Assert.That(RlhfConfig.Load(path), Is.EqualTo(c));
        Assert.That(RlhfConfig.Load(path).ToJson(), Is.EqualTo(c.ToJson()), "dropped on reading, never written back");
    }
}
