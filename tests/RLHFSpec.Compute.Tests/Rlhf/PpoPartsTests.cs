using System.Text.Json.Nodes;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Rlhf;

/// <summary>
/// Pieces of PPO: the scalar-head value model (values equal a logit column of the same trunk; its clipped value loss
/// by hand and its gradients against finite differences; checkpoints in HF sequence-classification layout), the
/// policy loss's entropy bonus (value by hand, gradients against finite differences), and the PPO config keys.
/// </summary>
public sealed class PpoPartsTests
{
    private static readonly DecoderGraphSpec Spec = GradientDecoderTrainingGraphTests.Qwen2Like;
    private const int B = GradientDecoderTrainingGraphTests.B, Tn = GradientDecoderTrainingGraphTests.Tn;

    /// <summary>Value-model weights: the decoder's random trunk and a random score row.</summary>
    private static Dictionary<string, Tensor> ValueWeights(int seed)
    {
        var weights = GradientDecoderTrainingGraphTests.RandomWeights(Spec, seed);
        var inputs = ValueModelGraph.Tensors(Spec).Where(t => t.Name != ValueModelGraph.ScoreWeight)
            .ToDictionary(t => t.Name, t => T(weights[t.Name], t.Shape));
        inputs[ValueModelGraph.ScoreWeight] = T(Rand(new Random(seed + 7), Spec.HiddenSize, -0.5, 0.5), 1, Spec.HiddenSize);
        return inputs;
    }

    private static Dictionary<string, Tensor> SequenceInputs(int seed, params string[] extra)
    {
        var all = GradientDecoderTrainingGraphTests.Sequences(Spec, seed);
        return new[] { DecoderTrainingGraph.InputIds, DecoderTrainingGraph.PositionIds, DecoderTrainingGraph.AttentionMask }.Concat(extra)
            .ToDictionary(n => n, n => all[n]);
    }

    [Test]
    public void Value_model_values_are_the_trunk_read_by_the_score_row()
    {
        // With score.weight = embedding row 3 of a tied model, the values are the logits of token 3.
        var inputs = SequenceInputs(1);
        var weights = GradientDecoderTrainingGraphTests.RandomWeights(Spec, 1);
        foreach (var (name, shape) in Spec.Tensors()) inputs[name] = T(weights[name], shape);
        var logits = Run(DecoderTrainingGraph.LogitsGraph(Spec, ElementType.Double), inputs)[DecoderTrainingGraph.LogitsOutput].D;
        inputs[ValueModelGraph.ScoreWeight] = T(weights["model.embed_tokens.weight"].AsSpan(3 * Spec.HiddenSize, Spec.HiddenSize).ToArray(), 1, Spec.HiddenSize);
        var values = Run(ValueModelGraph.ValuesGraph(Spec, ElementType.Double), inputs)[ValueModelGraph.Values];
        Assert.That(values.Shape, Is.EqualTo(new long[] { B, Tn }));
        for (int i = 0; i < B * Tn; i++)
            Assert.That(values.D[i], Is.EqualTo(logits[i * Spec.VocabSize + 3]).Within(1e-12), $"position {i}");
        var mask = inputs[DecoderTrainingGraph.AttentionMask].D.Select(x => (float)x).ToArray();
        var last = ValueModel.AtLastToken(values.D.Select(x => (float)x).ToArray(), mask, B, Tn);
        Assert.That(last, Is.EqualTo(new[] { (float)values.D[Tn - 1], (float)values.D[2 * Tn - 1] }));
    }

    [Test]
    public void The_clipped_value_loss_of_a_hand_worked_example()
    {
        // V = 1.0 moved 0.5 from V_old = 0.5 (clip 0.2): the clipped value 0.7 is further from R = 2, so it counts:
        // ½·1.3² = 0.845, and the gradient through V is 0 (the critic gains nothing by moving further).
        // V = 0.0 within 0.2 of V_old = -0.1: both terms are ½·1² = 0.5, gradient V − R = 1.
        var g = new GraphBuilder("value_loss_example");
        var v = g.Input("v", ElementType.Double, 2);
        var old = g.Input("old", ElementType.Double, 2);
        var r = g.Input("r", ElementType.Double, 2);
        var perToken = LossOps.ClippedValueLossPerToken(g, v, old, r, 0.2);
        g.Output(perToken, "per_token");
        var loss = LossOps.MaskedMean(g, perToken, g.Constant(new[] { 1.0, 1.0 }, new long[] { 2 }, ElementType.Double));
        g.Output(loss, "loss");
        Autodiff.Gradients(g, loss, new[] { v });
        var outs = Run(g, new Dictionary<string, Tensor> { ["v"] = T([1.0, 0.0], 2), ["old"] = T([0.5, -0.1], 2), ["r"] = T([2.0, -1.0], 2) });
        Assert.That(outs["per_token"].D, Is.EqualTo(new[] { 0.845, 0.5 }).Within(1e-12));
        Assert.That(outs["loss"].D[0], Is.EqualTo(0.6725).Within(1e-12));
        Assert.That(outs["grad_v"].D, Is.EqualTo(new[] { 0.0, 0.5 }).Within(1e-12));
        Assert.That(() => LossOps.ClippedValueLossPerToken(g, v, old, r, 0), Throws.ArgumentException.With.Message.Contains("clip"));
    }

    [Test]
    public void The_value_loss_gradients_match_finite_differences()
    {
        const double clip = 0.2, coefficient = 0.5;
        var inputs = SequenceInputs(2, DecoderTrainingGraph.LossMask);
        foreach (var (name, t) in ValueWeights(2)) inputs[name] = t;
        var values = Run(ValueModelGraph.ValuesGraph(Spec, ElementType.Double),
            inputs.Where(kv => kv.Key != DecoderTrainingGraph.LossMask).ToDictionary())[ValueModelGraph.Values].D;
        // Old values within and beyond the clip range of the current ones, so both branches of the max are taken.
        var rng = new Random(5);
        var old = values.Select(x => x + rng.NextDouble() * 1.2 - 0.6).ToArray();
        var returns = values.Select(x => x + rng.NextDouble() * 2 - 1).ToArray();
        inputs[ValueModelGraph.OldValues] = T(old, B, Tn);
        inputs[ValueModelGraph.Returns] = T(returns, B, Tn);
        var g = ValueModelGraph.ValueLossGraph(Spec, ElementType.Double, clip, coefficient);

        var mask = inputs[DecoderTrainingGraph.LossMask].D;
        double sum = 0, count = 0;
        int clippedWins = 0, plainWins = 0;
        for (int i = 0; i < B * Tn; i++)
        {
            if (mask[i] == 0) continue;
            double plain = (values[i] - returns[i]) * (values[i] - returns[i]);
            double moved = old[i] + Math.Clamp(values[i] - old[i], -clip, clip) - returns[i];
            if (moved * moved > plain) clippedWins++; else if (Math.Abs(values[i] - old[i]) > clip) plainWins++;
            sum += 0.5 * Math.Max(plain, moved * moved);
            count++;
        }
        Assert.That(clippedWins, Is.GreaterThan(0), "tokens where the clipped term wins (no gradient through V)");
        Assert.That(plainWins, Is.GreaterThan(0), "tokens beyond the clip range where the plain term wins");
        Assert.That(Run(g, inputs)[DecoderTrainingGraph.Loss].D[0], Is.EqualTo(coefficient * sum / count).Within(1e-12), "loss by hand");
        GradientDecoderTrainingGraphTests.CheckGradients(ValueModelGraph.Tensors(Spec), g, inputs);
    }

    [Test]
    public void The_entropy_bonus_gradients_match_finite_differences()
    {
        const double coefficient = 0.3;
        var inputs = GradientDecoderTrainingGraphTests.Sequences(Spec, 4);
        inputs.Remove(DecoderTrainingGraph.RefLogProbs);
        var weights = GradientDecoderTrainingGraphTests.RandomWeights(Spec, 4);
        foreach (var (name, shape) in Spec.Tensors()) inputs[name] = T(weights[name], shape);
        var with = DecoderTrainingGraph.PolicyLossGraph(Spec, ElementType.Double, entropyCoef: coefficient);
        var without = DecoderTrainingGraph.PolicyLossGraph(Spec, ElementType.Double);

        // loss(c) − loss(0) = −c · masked mean entropy of softmax(logits), computed here from the logits graph.
        var logitInputs = SequenceInputs(4);
        foreach (var (name, shape) in Spec.Tensors()) logitInputs[name] = inputs[name];
        var logits = Run(DecoderTrainingGraph.LogitsGraph(Spec, ElementType.Double), logitInputs)[DecoderTrainingGraph.LogitsOutput].D;
        var mask = inputs[DecoderTrainingGraph.LossMask].D;
        double entropy = 0, count = 0;
        for (int i = 0; i < B * Tn; i++)
        {
            if (mask[i] == 0) continue;
            var row = logits.AsSpan(i * Spec.VocabSize, Spec.VocabSize).ToArray();
            double max = row.Max(), z = row.Sum(l => Math.Exp(l - max));
            entropy -= row.Sum(l => Math.Exp(l - max) / z * (l - max - Math.Log(z)));
            count++;
        }
        double lossWith = Run(with, inputs)[DecoderTrainingGraph.Loss].D[0], lossWithout = Run(without, inputs)[DecoderTrainingGraph.Loss].D[0];
        Assert.That(lossWith - lossWithout, Is.EqualTo(-coefficient * entropy / count).Within(1e-12));
        GradientDecoderTrainingGraphTests.CheckGradients(Spec, with, inputs);
        Assert.That(() => DecoderTrainingGraph.PolicyLossGraph(Spec, ElementType.Double, entropyCoef: -1), Throws.ArgumentException.With.Message.Contains("entropy"));
    }

    [Test]
    public void A_policy_checkpoint_loads_as_a_value_model_with_a_zero_head_and_saves_in_sequence_classification_layout()
    {
        using var folder = new FormatsTestFolder();
        var tokenizer = TokenizerTests.TrainSmall();
        var config = Transformer.TransformerTestModels.Config("qwen2", vocab: tokenizer.VocabSize + 3) with { EosTokenIds = [tokenizer.VocabSize] };
        using var policy = Transformer.TransformerTestModels.Weights(config, 3);
        string policyFolder = folder.File("policy"), criticFolder = folder.File("critic");
        Checkpoint.Save(policyFolder, config, policy.ToHostTensors(), tokenizer);
        var options = new OnnxSessionOptions { IntraOpThreads = 1 };
        var batch = SequenceBatch.From([([1, 2, 3], [4, 5]), ([6], [7, 8, 9])]);
        float[] before;
        using (var checkpoint = Checkpoint.Load(policyFolder))
        using (var critic = ValueModel.Load(checkpoint, options))
        {
            Assert.That(critic.Weights.Names, Does.Contain(ValueModelGraph.ScoreWeight).And.Not.Contain("lm_head.weight"));
            Assert.That(critic.Weights.Span(ValueModelGraph.ScoreWeight).ToArray(), Is.All.EqualTo(0f));
            Assert.That(critic.Weights.Span("model.layers.1.mlp.up_proj.weight").ToArray(), Is.EqualTo(policy.Arena.Span("model.layers.1.mlp.up_proj.weight").ToArray()));
            Assert.That(critic.Values(batch), Is.All.EqualTo(0f), "a zero head values everything at 0");
            // The wrapper's loss equals the hand-computed one; from a zero head only score.weight has a gradient.
            float[] old = batch.Scatter([[0.1f, -0.3f], [0f, 0.5f, 0.05f]]), returns = batch.Scatter([[1f, 1f], [0f, 0.25f, -1f]]);
            using var gradients = new TensorArena(critic.Weights.Names.Select(n => (n, critic.Weights.Shape(n))));
            var (loss, values) = critic.ValueLossGradients(gradients, batch, old, returns, clip: 0.2, coefficient: 0.5);
            double expected = 0;
            for (int i = 0; i < old.Length; i++)
                if (batch.LossMask[i] != 0)
                {
                    double moved = old[i] + Math.Clamp(values[i] - old[i], -0.2, 0.2) - returns[i], plain = values[i] - returns[i];
                    expected += 0.5 * Math.Max(plain * plain, moved * moved);
                }
            Assert.That(loss, Is.EqualTo(0.5 * expected / batch.LossMask.Sum()).Within(1e-6));
            Assert.That(loss, Is.GreaterThan(0.1));
            Assert.That(gradients.Span(ValueModelGraph.ScoreWeight).ToArray(), Has.Some.Not.EqualTo(0f));
            var random = new Random(1);
            var score = critic.Weights.Span(ValueModelGraph.ScoreWeight);
            for (int i = 0; i < score.Length; i++) score[i] = (float)(random.NextDouble() - 0.5);
            before = critic.Values(batch);
            Assert.That(before.Where((_, i) => batch.AttentionMask[i] != 0), Has.Some.Not.EqualTo(0f));
            critic.Save(criticFolder, tokenizer);
        }
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(criticFolder, ModelConfig.FileName)))!;
        Assert.That(json["architectures"]!.AsArray().Select(a => (string)a!), Is.EqualTo(new[] { "Qwen2ForSequenceClassification" }));
        Assert.That((int)json["num_labels"]!, Is.EqualTo(1));
        using (var checkpoint = Checkpoint.Load(criticFolder))
        {
            Assert.That(checkpoint.Weights.Contains("lm_head.weight"), Is.False);
            Assert.That(checkpoint.ReadTensor(ValueModelGraph.ScoreWeight).Shape, Is.EqualTo(new[] { 1, config.HiddenSize }));
            using var critic = ValueModel.Load(checkpoint, options);
            Assert.That(critic.Values(batch), Is.EqualTo(before), "saved and loaded values are identical");
            Assert.That(() => TransformerWeights.FromCheckpoint(checkpoint), Throws.ArgumentException.With.Message.Contains("scalar-head"));
        }
    }

    [Test]
    public void A_critic_fits_returns_that_depend_on_the_sequence()
    {
        // Returns +1 after an even first response token, −1 after an odd one: the values must tell the rows apart
        // (explained variance near 1), not only learn the mean.
        using var test = new TestCritic(weightSeed: 6);
        var critic = test.Critic;
        var rng = new Random(9);
        var rows = Enumerable.Range(0, 8).Select(i => (Enumerable.Range(0, 3).Select(_ => rng.Next(20)).ToArray(),
            new[] { 2 * rng.Next(10) + i % 2 }.Concat(Enumerable.Range(0, 4).Select(_ => rng.Next(20))).ToArray())).ToArray();
        var batch = SequenceBatch.From(rows);
        var returns = batch.Scatter(rows.Select(r => Enumerable.Repeat(r.Item2[0] % 2 == 0 ? 1f : -1f, r.Item2.Length).ToArray()).ToArray());
        using var gradients = new TensorArena(critic.Weights.Names.Select(n => (n, critic.Weights.Shape(n))));
        var optimizer = new AdamW(new AdamWOptions { Schedule = LearningRateSchedule.Constant(1e-2), WeightDecay = 0 });
        foreach (var name in critic.Weights.Names) optimizer.Add(name, critic.Weights.Memory(name), gradients.Memory(name));
        double first = 0, last = 0;
        for (int step = 0; step < 60; step++)
        {
            var old = critic.Values(batch);
            (last, _) = critic.ValueLossGradients(gradients, batch, old, returns, clip: 10);
            if (step == 0) first = last;
            optimizer.Update();
        }
        var values = critic.Values(batch);
        var masked = Enumerable.Range(0, values.Length).Where(i => batch.LossMask[i] != 0).ToArray();
        double mean = masked.Average(i => returns[i]);
        double residual = masked.Sum(i => Math.Pow(returns[i] - values[i], 2)), total = masked.Sum(i => Math.Pow(returns[i] - mean, 2));
        Assert.That(last, Is.LessThan(0.1 * first), $"value loss {first:F4} -> {last:F4}");
        Assert.That(1 - residual / total, Is.GreaterThan(0.9), "explained variance");
    }

    [Test]
    public void The_value_at_the_cut_is_the_critics_value_after_the_last_token()
    {
        var rng = new Random(3);
        using var test = new TestCritic(weightSeed: 8, scoreHead: rng);
        var critic = test.Critic;
        var rows = Enumerable.Range(0, 5).Select(i => (Enumerable.Range(0, 2 + i % 3).Select(_ => rng.Next(20)).ToArray(),
            Enumerable.Range(0, 1 + i).Select(_ => rng.Next(20)).ToArray())).ToArray();
        var atCut = critic.ValuesAfter(rows);
        for (int i = 0; i < rows.Length; i++)
        {
            var (prompt, response) = rows[i];
            // The same state as the value before the next token of any longer response: read it from the row's
            // continuation by two more tokens, alone in its batch (no padding).
            var longer = SequenceBatch.From([(prompt, [.. response, 7, 9])]);
            float expected = longer.Gather(critic.Values(longer), 0)[response.Length];
            Assert.That(atCut[i], Is.EqualTo(expected).Within(1e-5), $"row {i}");
            // ...and not the value before the last token (what the rollout batch holds at its last position).
            float before = longer.Gather(critic.Values(longer), 0)[response.Length - 1];
            Assert.That(Math.Abs(atCut[i] - before), Is.GreaterThan(1e-6), $"row {i}: a different state");
        }
        Assert.That(critic.ValuesAfter([]), Is.Empty);
    }

    [Test]
    public void Ppo_config_keys_are_validated_with_the_key_and_value()
    {
        var c = new RlhfConfig { Algorithm = RlhfAlgorithm.Ppo };
        c.Validate();
        Assert.That((c.Gamma, c.GaeLambda, c.ValueClip, c.ValueCoef, c.EntropyCoef, c.Critic), Is.EqualTo((1.0, 0.95, 0.2, 0.5, 0.0, (string?)null)));
        Assert.That(c.With("--gae-lambda", "0.9").With("--critic-learning-rate", "2e-4").With("--critic", "some/folder"),
            Is.EqualTo(c with { GaeLambda = 0.9, CriticLearningRate = 2e-4, Critic = "some/folder" }));
        foreach (var (bad, message) in new (RlhfConfig, string)[]
        {
            (c with { Gamma = 1.5 }, "gamma: 1.5, must be in [0, 1]"),
            (c with { Gamma = -0.1 }, "gamma: -0.1"),
            (c with { GaeLambda = 2 }, "gae_lambda: 2, must be in [0, 1]"),
            (c with { ValueClip = 0 }, "value_clip: 0, must be > 0"),
            (c with { ValueCoef = -1 }, "value_coef: -1"),
            (c with { EntropyCoef = -0.01 }, "entropy_coef: -0.01"),
            (c with { CriticLearningRate = 0 }, "critic_learning_rate: 0"),
            (c with { Gamma = double.NaN }, "gamma: NaN"),
        })
        {
            var e = Assert.Throws<ArgumentException>(bad.Validate)!;
            Assert.That(e.Message, Does.StartWith(message));
            Assert.That(e.Message, Does.Not.Contain("\n"));
        }
    }
}
