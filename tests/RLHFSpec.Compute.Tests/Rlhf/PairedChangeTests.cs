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
    public void Repeated_prompts_form_clusters_of_the_standard_error([Values(1, 2, 3)] int seed)
    {
        // A set drawn with repeats: each answer's prompt is one of 40, and every copy of a prompt changes alike (as
        // greedy answers do). The standard error is then the one of the distinct prompts weighted by their copies.
        var random = new Random(seed);
        var distinctFirst = Enumerable.Range(0, 40).Select(_ => random.NextDouble() < 0.3).ToArray();
        var distinctLast = distinctFirst.Select(x => random.NextDouble() < 0.25 ? !x : x).ToArray();
        var of = Enumerable.Range(0, 200).Select(_ => random.Next(40)).ToArray();
        var p = PairedChange.Of(of.Select(g => distinctFirst[g]).ToList(), of.Select(g => distinctLast[g]).ToList(), 0, 5, of.Select(g => $"{g}+1=").ToList());
        double n = of.Length, difference = of.Sum(g => Change(g)) / n;
        double Change(int g) => (distinctLast[g] ? 1.0 : 0.0) - (distinctFirst[g] ? 1.0 : 0.0);
        double squares = of.Distinct().Sum(g => Math.Pow(of.Count(x => x == g) * (Change(g) - difference), 2));
        Assert.That(p.Difference, Is.EqualTo(difference).Within(1e-12));
        Assert.That(p.DistinctPrompts, Is.EqualTo(of.Distinct().Count()));
        Assert.That(p.StandardError, Is.EqualTo(Math.Sqrt(squares) / n).Within(1e-12));
        // Counting the copies as independent answers understates it.
        var independent = PairedChange.Of(of.Select(g => distinctFirst[g]).ToList(), of.Select(g => distinctLast[g]).ToList(), 0, 5);
        Assert.That(independent.StandardError, Is.LessThan(p.StandardError));
        Assert.That(independent.DistinctPrompts, Is.EqualTo(200));
    }

    [Test]
    public void Distinct_prompts_give_the_plain_standard_error()
    {
        var random = new Random(4);
        var first = Enumerable.Range(0, 64).Select(_ => random.NextDouble() < 0.4).ToArray();
        var last = first.Select(x => random.NextDouble() < 0.3 ? !x : x).ToArray();
        var plain = PairedChange.Of(first, last, 0, 1);
        var named = PairedChange.Of(first, last, 0, 1, Enumerable.Range(0, 64).Select(i => $"{i}+0=").ToList());
        Assert.That(named.StandardError, Is.EqualTo(plain.StandardError).Within(1e-15));
        Assert.That(() => PairedChange.Of(first, last, 0, 1, ["1+1="]), Throws.ArgumentException.With.Message.Contains("1 prompts for 64 answers"));
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
