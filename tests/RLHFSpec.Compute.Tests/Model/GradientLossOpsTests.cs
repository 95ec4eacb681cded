using RLHFSpec.Compute.Model.Onnx;
using static RLHFSpec.Compute.Tests.Model.GradientCheck;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>RLHF loss pieces: forward values against a C# reference, gradients against finite differences.</summary>
public class GradientLossOpsTests
{
    private const int B = 2, Tn = 5, V = 7;

    private static Dictionary<string, Tensor> Batch(int seed)
    {
        var rng = new Random(seed);
        return new Dictionary<string, Tensor>
        {
            ["targets"] = L(Enumerable.Range(0, B * Tn).Select(_ => (long)rng.Next(V)).ToArray(), B, Tn),
            ["old"] = T(Rand(rng, B * Tn, -2.8, -1.2), B, Tn),
            ["ref"] = T(Rand(rng, B * Tn, -2.8, -1.2), B, Tn),
            ["adv"] = T(Rand(rng, B * Tn, -1, 1), B, Tn),
            ["mask"] = T(new double[] { 1, 1, 1, 0, 0, 1, 1, 1, 1, 1 }, B, Tn),
        };
    }

    private static Value Loss(GraphBuilder g, IReadOnlyDictionary<string, Value> v) => Loss(g, v, LossAggregation.TokenMean);

    private static Value Loss(GraphBuilder g, IReadOnlyDictionary<string, Value> v, LossAggregation aggregation) =>
        LossOps.PolicyLoss(g, LossOps.TokenLogProbs(g, v["logits"], v["targets"]), v["old"], v["adv"], v["mask"],
            v["ref"], klBeta: 0.05, clipLow: 0.2, clipHigh: 0.28, aggregation);

    [Test]
    public void PolicyLossMatchesReference([Values] LossAggregation aggregation)
    {
        var batch = Batch(1);
        var logits = Rand(new Random(2), B * Tn * V, -2, 2);
        var g = new GraphBuilder();
        var v = new Dictionary<string, Value> { ["logits"] = g.Input("logits", ElementType.Double, "B", "T", V) };
        foreach (var (k, t) in batch) v[k] = g.Input(k, t.Data is long[] ? ElementType.Int64 : ElementType.Double, "B", "T");
        g.Output(LossOps.TokenLogProbs(g, v["logits"], v["targets"]), "logp");
        g.Output(Loss(g, v, aggregation), "loss");
        var inputs = new Dictionary<string, Tensor>(batch) { ["logits"] = T(logits, B, Tn, V) };
        var r = Run(g, inputs);

        var targets = (long[])batch["targets"].Data;
        double[] old = batch["old"].D, reference = batch["ref"].D, adv = batch["adv"].D, mask = batch["mask"].D;
        var logp = new double[B * Tn];
        double sum = 0, count = 0;
        var seqSum = new double[B];
        var seqCount = new double[B];
        for (int i = 0; i < B * Tn; i++)
        {
            var row = logits.Skip(i * V).Take(V).ToArray();
            double m = row.Max(), lse = m + Math.Log(row.Sum(x => Math.Exp(x - m)));
            logp[i] = row[targets[i]] - lse;
            double ratio = Math.Exp(logp[i] - old[i]);
            double surrogate = Math.Min(ratio * adv[i], Math.Clamp(ratio, 0.8, 1.28) * adv[i]);
            double d = reference[i] - logp[i];
            double perToken = mask[i] * (-surrogate + 0.05 * (Math.Exp(d) - d - 1));
            sum += perToken;
            count += mask[i];
            seqSum[i / Tn] += perToken;
            seqCount[i / Tn] += mask[i];
        }
        AssertClose(logp, r["logp"].D, 1e-12, "token log-probs");
        double expected = aggregation == LossAggregation.TokenMean ? sum / count
            : Enumerable.Range(0, B).Average(b => seqSum[b] / Math.Max(seqCount[b], 1));
        Assert.That(r["loss"].D[0], Is.EqualTo(expected).Within(1e-12));
    }

    [Test]
    public void AllZeroMaskGivesZeroNotNaN()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 3);
        var m = g.Input("m", ElementType.Double, 3);
        g.Output(LossOps.MaskedMean(g, x, m), "mean");
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(new double[] { 1, 2, 3 }, 3), ["m"] = T(new double[3], 3) });
        Assert.That(r["mean"].D[0], Is.EqualTo(0));
        Assert.That(() => LossOps.MaskedMean(g, x, g.Input("m2", ElementType.Double, 1, 3)), Throws.ArgumentException.With.Message.Contains("rank"));
        Assert.That(() => LossOps.PolicyLoss(g, x, x, x, m, null, klBeta: 0.1), Throws.ArgumentException.With.Message.Contains("reference"));
    }

    [Test]
    public void PolicyLossGradientMatchesFiniteDifferences([Values(3, 4)] int seed, [Values] LossAggregation aggregation)
    {
        var errors = RelativeErrors((g, v) => Loss(g, v, aggregation), new[] { new Wrt("logits", new long[] { B, Tn, V }, -2, 2) }, Batch(seed), seed);
        Assert.That(errors["logits"], Is.LessThanOrEqualTo(1e-6));
    }
}
