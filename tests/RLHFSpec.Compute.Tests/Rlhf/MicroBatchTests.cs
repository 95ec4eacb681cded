using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Rlhf;

/// <summary>
/// Gradient accumulation over micro-batches: a minibatch of 12 rows of varied lengths split 5/5/2 gives, weighted by
/// rows (a mean over sequences) or by tokens (a mean over tokens), the gradient and loss of the unsplit minibatch —
/// for GRPO's policy loss (KL term), PPO's (entropy bonus) and the critic's value loss; one micro-batch is the
/// unsplit pass bit for bit.
/// </summary>
public sealed class MicroBatchTests
{
    private static readonly int[] Split = [5, 5, 2];

    /// <summary>12 (prompt, response) rows of 2–6 prompt and 1–9 response tokens from a vocabulary of <paramref name="vocab"/>.</summary>
    private static (int[] Prompt, int[] Response)[] Rows(int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, 12).Select(i => (Enumerable.Range(0, 2 + i % 5).Select(_ => rng.Next(vocab)).ToArray(),
            Enumerable.Range(0, 1 + rng.Next(9)).Select(_ => rng.Next(vocab)).ToArray())).ToArray();
    }

    /// <summary>Consecutive row ranges of <see cref="Split"/>.</summary>
    private static IEnumerable<int[]> Chunks()
    {
        int at = 0;
        foreach (int n in Split)
        {
            yield return Enumerable.Range(at, n).ToArray();
            at += n;
        }
    }

    /// <summary>A micro-batch of <paramref name="rows"/> with per-token old/reference log-probs, advantages, values and returns taken from per-row arrays.</summary>
    private static RolloutMicroBatch Micro((int[] Prompt, int[] Response)[] all, int[] rows, float[][][] perRow)
    {
        var batch = SequenceBatch.From(rows.Select(i => all[i]).ToArray());
        float[] Dense(int q) => batch.Scatter(rows.Select(i => perRow[i][q]).ToArray());
        return new RolloutMicroBatch(rows, batch) { Old = Dense(0), Reference = Dense(1), Advantages = Dense(2), Values = Dense(3), Returns = Dense(4) };
    }

    /// <summary>The unsplit minibatch (one micro-batch) and the 5/5/2 split of the same rows and per-token inputs.</summary>
    private static (RolloutMinibatch Whole, RolloutMinibatch Split) Minibatches((int[] Prompt, int[] Response)[] rows, Func<int, float[]> oldLogProbs, int seed)
    {
        var rng = new Random(seed);
        float Noise(double scale) => (float)((rng.NextDouble() - 0.5) * scale);
        var perRow = rows.Select((r, i) =>
        {
            var old = oldLogProbs(i);
            return new[]
            {
                old.Select(x => x + Noise(0.6)).ToArray(), old.Select(x => x + Noise(0.6)).ToArray(), old.Select(_ => Noise(4)).ToArray(),
                old.Select(_ => Noise(1)).ToArray(), old.Select(_ => Noise(2)).ToArray(),
            };
        }).ToArray();
        return (new RolloutMinibatch([Micro(rows, Enumerable.Range(0, rows.Length).ToArray(), perRow)]),
            new RolloutMinibatch(Chunks().Select(c => Micro(rows, c, perRow)).ToArray()));
    }

    private static void AssertClose(TensorArena accumulated, TensorArena whole, double lossAccumulated, double lossWhole, string what)
    {
        var a = accumulated.All.ToArray();
        var w = whole.All.ToArray();
        double norm = Math.Sqrt(w.Sum(x => (double)x * x)), diff = Math.Sqrt(a.Zip(w, (x, y) => ((double)x - y) * ((double)x - y)).Sum());
        TestContext.Out.WriteLine($"{what}: |g| {norm:G6}, |g_acc - g| {diff:G3}, loss {lossWhole:G9} vs {lossAccumulated:G9}");
        Assert.That(norm, Is.GreaterThan(1e-3), $"{what}: a gradient to compare");
        Assert.That(diff, Is.LessThanOrEqualTo(1e-5 * norm), $"{what}: accumulated gradient vs unsplit");
        Assert.That(lossAccumulated, Is.EqualTo(lossWhole).Within(1e-5 * Math.Max(1, Math.Abs(lossWhole))), $"{what}: loss");
    }

    [TestCase(LossAggregation.SequenceMean, 0.05, 0.0, TestName = "Grpo_policy_gradient_accumulated_over_micro_batches_equals_the_unsplit_one")]
    [TestCase(LossAggregation.TokenMean, 0.0, 0.01, TestName = "Ppo_policy_gradient_accumulated_over_micro_batches_equals_the_unsplit_one")]
    public void Policy_gradient(LossAggregation aggregation, double klBeta, double entropyCoef)
    {
        var config = Transformer.TransformerTestModels.Config("qwen2", vocab: 23);
        using var weights = Transformer.TransformerTestModels.Weights(config, 5);
        using var graphs = new PolicyGraphs(weights.Spec, new OnnxSessionOptions { IntraOpThreads = 1 });
        var rows = Rows(23, 11);
        var (whole, split) = Minibatches(rows, i =>
        {
            var one = SequenceBatch.From([rows[i]]);
            return one.Gather(graphs.LogProbs(weights.Arena, one), 0);
        }, 12);
        Assert.That(split.Micro.Select(m => m.Rows.Length), Is.EqualTo(Split));
        var settings = new PolicyLossSettings(klBeta, 0.2, 0.2, aggregation, entropyCoef);
        using var gradWhole = new TensorArena(weights.Spec.Tensors());
        using var gradSplit = new TensorArena(weights.Spec.Tensors());
        using var gradOne = new TensorArena(weights.Spec.Tensors());
        using (var one = new GradientAccumulator(gradOne))
        using (var accumulator = new GradientAccumulator(gradSplit))
        {
            var w = whole.Micro[0];
            double lossWhole = graphs.PolicyLossGradients(weights.Arena, gradWhole, w.Batch, w.Old, w.Advantages!, w.Reference, settings).Loss;
            double lossSplit = graphs.PolicyLossGradients(weights.Arena, accumulator, split, settings);
            AssertClose(gradSplit, gradWhole, lossSplit, lossWhole, $"{aggregation} policy loss");
            Assert.That(graphs.PolicyLossGradients(weights.Arena, one, whole, settings), Is.EqualTo(lossWhole), "one micro-batch: the unsplit loss");
            Assert.That(gradOne.All.ToArray(), Is.EqualTo(gradWhole.All.ToArray()), "one micro-batch: the unsplit gradient bit for bit");
        }
        // The weights matter: rows and tokens differ per micro-batch, so the other aggregation's weights are wrong.
        var other = split.Weights(aggregation == LossAggregation.SequenceMean ? LossAggregation.TokenMean : LossAggregation.SequenceMean);
        Assert.That(other, Is.Not.EqualTo(split.Weights(aggregation)));
    }

    [Test]
    public void The_critics_value_loss_gradient_accumulated_over_micro_batches_equals_the_unsplit_one()
    {
        var rng = new Random(4);
        using var test = new TestCritic(weightSeed: 6, scoreHead: rng);
        var (config, critic) = (test.Config, test.Critic);
        var rows = Rows(config.VocabSize, 13);
        var (whole, split) = Minibatches(rows, i =>
        {
            var one = SequenceBatch.From([rows[i]]);
            return one.Gather(critic.Values(one), 0);
        }, 14);
        var tensors = critic.Weights.Names.Select(n => (n, critic.Weights.Shape(n))).ToArray();
        using var gradWhole = new TensorArena(tensors);
        using var gradSplit = new TensorArena(tensors);
        using var accumulator = new GradientAccumulator(gradSplit);
        var w = whole.Micro[0];
        double lossWhole = critic.ValueLossGradients(gradWhole, w.Batch, w.Values!, w.Returns!, 0.2, 0.5).Loss;
        // As PpoAlgorithm.TrainCritic: the value loss is a mean over tokens.
        double lossSplit = accumulator.Accumulate(split.Weights(LossAggregation.TokenMean), (k, gradients) =>
            critic.ValueLossGradients(gradients, split.Micro[k].Batch, split.Micro[k].Values!, split.Micro[k].Returns!, 0.2, 0.5).Loss);
        AssertClose(gradSplit, gradWhole, lossSplit, lossWhole, "value loss");
    }
}
