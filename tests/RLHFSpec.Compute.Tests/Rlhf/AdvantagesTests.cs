using RLHFSpec.Compute.Rlhf;

namespace RLHFSpec.Compute.Tests.Rlhf;

public class AdvantagesTests
{
    [Test]
    public void GroupNormalisedAdvantagesMatchAHandWorkedExample()
    {
        // Group 0: rewards 1, 0, 0, 1 → mean 0.5, population std 0.5 → ±1. Group 1: 1, 1 → std 0 → 0.
        double[] rewards = [1, 0, 0, 1, 1, 1];
        int[] groups = [0, 0, 0, 0, 1, 1];
        var a = Advantages.GroupNormalized(rewards, groups, epsilon: 0);
        Assert.That(a.Take(4), Is.EqualTo(new[] { 1.0, -1.0, -1.0, 1.0 }).Within(1e-12));
        Assert.That(double.IsNaN(a[4]) || a[4] == 0, "an all-equal group has no signal");
        var b = Advantages.GroupNormalized(rewards, groups, epsilon: 1e-6);
        Assert.That(b[4], Is.EqualTo(0).Within(1e-12));
        var c = Advantages.GroupNormalized(rewards, groups, scaleByStd: false);
        Assert.That(c.Take(4), Is.EqualTo(new[] { 0.5, -0.5, -0.5, 0.5 }).Within(1e-12));
    }

    [Test]
    public void PpoTargetsOfOneResponseMatchAHandWorkedExample()
    {
        // β = 0.1: log π − log π_ref = (0.5, 0, 0.5) → rewards (−0.05, 0, −0.05 + outcome 1 = 0.95).
        // γ = 1, λ = 0.5, values (0.2, 0.4, 0.6): δ2 = 0.95 − 0.6 = 0.35; δ1 = 0 + 0.6 − 0.4 = 0.2;
        // δ0 = −0.05 + 0.4 − 0.2 = 0.15. A2 = 0.35; A1 = 0.2 + 0.5·0.35 = 0.375; A0 = 0.15 + 0.5·0.375 = 0.3375.
        var rewards = Advantages.KlPenalizedRewards([-1f, -2f, -0.5f], [-1.5f, -2f, -1f], klBeta: 0.1, outcome: 1);
        Assert.That(rewards, Is.EqualTo(new[] { -0.05, 0, 0.95 }).Within(1e-12));
        var (a, r) = Advantages.Gae(rewards, [0.2, 0.4, 0.6], gamma: 1, lambda: 0.5);
        Assert.That(a, Is.EqualTo(new[] { 0.3375, 0.375, 0.35 }).Within(1e-12));
        Assert.That(r, Is.EqualTo(new[] { 0.5375, 0.775, 0.95 }).Within(1e-12));
        Assert.That(Advantages.KlPenalizedRewards([], [], 0.1, 1), Is.Empty, "an empty response has no token to reward");
        Assert.Throws<ArgumentException>(() => Advantages.KlPenalizedRewards([1f], [], 0.1, 1));
    }

    [Test]
    public void A_response_cut_at_max_new_tokens_bootstraps_from_the_value_at_the_cut()
    {
        // The example above (β = 0.1, γ = 1, λ = 0.5, values 0.2, 0.4, 0.6), now cut at max_new_tokens with the critic's
        // value after the last token 0.7: no outcome reward (the answer is unfinished; a rule might still give 1), and
        // V_T = 0.7 instead of 0. rewards (−0.05, 0, −0.05); δ2 = −0.05 + 0.7 − 0.6 = 0.05; δ1 = 0.6 − 0.4 = 0.2;
        // δ0 = −0.05 + 0.4 − 0.2 = 0.15. A2 = 0.05; A1 = 0.2 + 0.5·0.05 = 0.225; A0 = 0.15 + 0.5·0.225 = 0.2625.
        float[] logProbs = [-1f, -2f, -0.5f], refLogProbs = [-1.5f, -2f, -1f];
        double[] values = [0.2, 0.4, 0.6];
        foreach (var cut in new[] { Compute.Generation.FinishReason.Length, Compute.Generation.FinishReason.Context })
        {
            var (a, r) = Advantages.PpoResponseTargets(logProbs, refLogProbs, values, outcome: 1, cut, valueAtCut: 0.7, klBeta: 0.1, gamma: 1, lambda: 0.5);
            Assert.That(a, Is.EqualTo(new[] { 0.2625, 0.225, 0.05 }).Within(1e-12), $"{cut}: advantages");
            Assert.That(r, Is.EqualTo(new[] { 0.4625, 0.625, 0.65 }).Within(1e-12), $"{cut}: returns");
        }
        // A response that ended is terminal: the outcome on its last token, nothing after it (the value at the cut is ignored).
        var (ended, endedReturns) = Advantages.PpoResponseTargets(logProbs, refLogProbs, values, outcome: 1, Compute.Generation.FinishReason.Stop,
            valueAtCut: 0.7, klBeta: 0.1, gamma: 1, lambda: 0.5);
        Assert.That(ended, Is.EqualTo(new[] { 0.3375, 0.375, 0.35 }).Within(1e-12));
        Assert.That(endedReturns, Is.EqualTo(new[] { 0.5375, 0.775, 0.95 }).Within(1e-12));
        // The bootstrap is discounted like any next value: γ = 0.9, λ = 0 → A2 = −0.05 + 0.9·0.7 − 0.6.
        var (discounted, _) = Advantages.PpoResponseTargets(logProbs, refLogProbs, values, 1, Compute.Generation.FinishReason.Length, 0.7, 0.1, gamma: 0.9, lambda: 0);
        Assert.That(discounted[2], Is.EqualTo(-0.05 + 0.9 * 0.7 - 0.6).Within(1e-12));
        Assert.That(Assert.Throws<ArgumentException>(() => Advantages.Gae([1], [1], 1, 1, double.NaN))!.ParamName, Is.EqualTo("bootstrapValue"));
    }

    [Test]
    public void GaeMatchesAHandWorkedExample()
    {
        // γ = 0.9, λ = 0.5; rewards (0, 0, 1), values (0.5, 0.4, 0.8).
        // δ2 = 1 − 0.8 = 0.2; δ1 = 0 + 0.9·0.8 − 0.4 = 0.32; δ0 = 0 + 0.9·0.4 − 0.5 = −0.14.
        // A2 = 0.2; A1 = 0.32 + 0.45·0.2 = 0.41; A0 = −0.14 + 0.45·0.41 = 0.0445.
        var (a, r) = Advantages.Gae([0, 0, 1], [0.5, 0.4, 0.8], gamma: 0.9, lambda: 0.5);
        Assert.That(a, Is.EqualTo(new[] { 0.0445, 0.41, 0.2 }).Within(1e-12));
        Assert.That(r, Is.EqualTo(new[] { 0.5445, 0.81, 1.0 }).Within(1e-12));
    }

    [Test]
    public void GaeWithLambdaOneIsTheDiscountedReturnMinusTheValue()
    {
        var random = new Random(4);
        var rewards = Enumerable.Range(0, 20).Select(_ => random.NextDouble() - 0.5).ToArray();
        var values = Enumerable.Range(0, 20).Select(_ => random.NextDouble()).ToArray();
        var (a, _) = Advantages.Gae(rewards, values, gamma: 0.95, lambda: 1);
        for (int t = 0; t < 20; t++)
        {
            double g = 0;
            for (int k = 19; k >= t; k--) g = rewards[k] + 0.95 * g;
            Assert.That(a[t], Is.EqualTo(g - values[t]).Within(1e-10));
        }
    }

    [Test]
    public void WhitenedAdvantagesHaveZeroMeanAndUnitSpread()
    {
        double[] a = [1, 2, 3, 10];
        Advantages.Whiten(a);
        Assert.That(a.Average(), Is.EqualTo(0).Within(1e-12));
        Assert.That(Math.Sqrt(a.Average(x => x * x)), Is.EqualTo(1).Within(1e-6));
    }

    [Test]
    public void BadInputIsRejectedNamingTheArgument()
    {
        Assert.That(Assert.Throws<ArgumentException>(() => Advantages.GroupNormalized([1, 2], [0]))!.ParamName, Is.EqualTo("groups"));
        Assert.That(Assert.Throws<ArgumentException>(() => Advantages.GroupNormalized([double.NaN], [0]))!.ParamName, Is.EqualTo("rewards"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => Advantages.Gae([1], [1], 1.5, 0.9))!.ParamName, Is.EqualTo("gamma"));
    }
}
