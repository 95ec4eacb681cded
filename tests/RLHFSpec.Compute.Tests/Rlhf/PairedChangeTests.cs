using RLHFSpec.Compute.Rlhf;

namespace RLHFSpec.Compute.Tests.Rlhf;

public class PairedChangeTests
{
    [Test]
    public void Counts_the_answers_that_changed_and_their_standard_error()
    {
        // 10 prompts: 3 wrong → right, 1 right → wrong, 6 unchanged.
        bool[] first = [false, false, false, true, true, true, false, false, true, false];
        bool[] last = [true, true, true, false, true, true, false, false, true, false];
        var p = PairedChange.Of(first, last, 0, 10);
        Assert.That((p.WrongToRight, p.RightToWrong, p.Prompts, p.FirstIteration, p.LastIteration), Is.EqualTo((3, 1, 10, 0, 10)));
        Assert.That(p.Difference, Is.EqualTo(last.Count(x => x) / 10.0 - first.Count(x => x) / 10.0).Within(1e-15));
        // The per-prompt differences d_i ∈ {−1, 0, +1}: their sample variance (population form) over n, square-rooted.
        double[] d = first.Zip(last, (a, b) => (b ? 1.0 : 0.0) - (a ? 1.0 : 0.0)).ToArray();
        double mean = d.Average();
        double se = Math.Sqrt(d.Sum(x => (x - mean) * (x - mean)) / d.Length) / Math.Sqrt(d.Length);
        Assert.That(p.StandardError, Is.EqualTo(se).Within(1e-12));
        Assert.That(p.Z, Is.EqualTo(p.Difference / se).Within(1e-12));
    }

    [Test]
    public void Random_pairs_match_the_per_prompt_difference_formula([Values(1, 2, 3)] int seed, [Values(1, 7, 128, 513)] int n)
    {
        var random = new Random(seed);
        var first = Enumerable.Range(0, n).Select(_ => random.NextDouble() < 0.3).ToArray();
        var last = first.Select(x => random.NextDouble() < 0.2 ? !x : x).ToArray();
        var p = PairedChange.Of(first, last, 0, 1);
        double[] d = first.Zip(last, (a, b) => (b ? 1.0 : 0.0) - (a ? 1.0 : 0.0)).ToArray();
        double mean = d.Average();
        Assert.That(p.Difference, Is.EqualTo(mean).Within(1e-12));
        Assert.That(p.StandardError, Is.EqualTo(Math.Sqrt(d.Sum(x => (x - mean) * (x - mean)) / n) / Math.Sqrt(n)).Within(1e-12));
        Assert.That(p.WrongToRight + p.RightToWrong, Is.EqualTo(d.Count(x => x != 0)));
    }

    [Test]
    public void Nothing_changed_gives_zero_and_mismatched_sets_are_refused()
    {
        bool[] same = [true, false, true];
        var p = PairedChange.Of(same, same, 0, 2);
        Assert.That((p.Difference, p.StandardError, p.Z), Is.EqualTo((0.0, 0.0, 0.0)));
        Assert.That(() => PairedChange.Of([true], [true, false], 0, 1), Throws.ArgumentException.With.Message.Contains("same prompts"));
        Assert.That(() => PairedChange.Of([], [], 0, 1), Throws.ArgumentException);
    }
}
