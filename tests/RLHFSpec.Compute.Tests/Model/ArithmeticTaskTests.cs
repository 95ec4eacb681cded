using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Tests.Model;

public class ArithmeticTaskTests
{
    [Test]
    public void ReferenceResponsesShowTheRunningSumAndEarnFullReward()
    {
        var sample = ArithmeticTask.Make([12, 7, 30]);
        Assert.That(sample.Prompt, Is.EqualTo("12+7+30="));
        Assert.That(sample.ReferenceResponse, Is.EqualTo("12+7=19;19+30=49#49"));
        Assert.That(sample.Answer, Is.EqualTo(49));
        var task = new ArithmeticTask(seed: 3);
        for (int i = 0; i < 2000; i++)
        {
            var s = task.Next();
            Assert.That(ArithmeticTask.Reward(s.Prompt, s.ReferenceResponse), Is.EqualTo(1), s.Prompt);
            Assert.That((s.Prompt + s.ReferenceResponse).All(c => ArithmeticTask.Alphabet.Contains(c)), s.Prompt);
        }
    }

    [TestCase("12+7=19;19+30=48#48")]
    [TestCase("12+7=19;19+30=49#")]
    [TestCase("12+7=19;19+30=49")]
    [TestCase("#4x9")]
    [TestCase("")]
    [TestCase("#49#50")]
    public void WrongOrMalformedResponsesEarnNothing(string response) =>
        Assert.That(ArithmeticTask.Reward("12+7+30=", response), Is.EqualTo(0));

    [Test]
    public void OnlyTheFinalAnswerCounts() =>
        Assert.That(ArithmeticTask.Reward("12+7+30=", "garbage;1+1=3#49"), Is.EqualTo(1));

    [TestCase("12+7+30")]
    [TestCase("12++30=")]
    [TestCase("12+x=")]
    public void MalformedPromptsAreErrorsNamingThePrompt(string prompt)
    {
        var e = Assert.Throws<FormatException>(() => ArithmeticTask.Reward(prompt, "#1"));
        Assert.That(e!.Message, Does.Contain(prompt));
    }

    [Test]
    public void SameSeedSamePromptsDifferentSeedDifferentPrompts()
    {
        var a = new ArithmeticTask(seed: 9);
        var b = new ArithmeticTask(seed: 9);
        var c = new ArithmeticTask(seed: 10);
        var fromA = Enumerable.Range(0, 50).Select(_ => a.Next().Prompt).ToArray();
        Assert.That(Enumerable.Range(0, 50).Select(_ => b.Next().Prompt), Is.EqualTo(fromA));
        Assert.That(Enumerable.Range(0, 50).Select(_ => c.Next().Prompt), Is.Not.EqualTo(fromA));
    }

    [Test]
    public void A_term_limit_keeps_the_task_distribution_below_it_and_the_full_limit_is_the_task_itself([Values(2, 3, 4, 9)] int maxTerms)
    {
        static int Terms(string prompt) => prompt.Count(c => c == '+') + 1;
        var full = new ArithmeticTask(seed: 11);
        var unlimited = new ArithmeticTask(seed: 11, ArithmeticTask.MaxTerms);
        Assert.That(Enumerable.Range(0, 500).Select(_ => unlimited.Next().Prompt), Is.EqualTo(Enumerable.Range(0, 500).Select(_ => full.Next().Prompt)),
            "the task's own limit draws the very same prompts");

        var limited = new ArithmeticTask(seed: 12, maxTerms);
        var reference = new ArithmeticTask(seed: 13);
        var drawn = Enumerable.Range(0, 20_000).Select(_ => Terms(limited.Next().Prompt)).ToArray();
        var below = Enumerable.Range(0, 200_000).Select(_ => Terms(reference.Next().Prompt)).Where(t => t <= maxTerms).ToArray();
        Assert.That(drawn.Max(), Is.LessThanOrEqualTo(maxTerms));
        Assert.That(drawn.Min(), Is.EqualTo(ArithmeticTask.MinTerms));
        // The conditional distribution: each length's share within 1.5 points of the unlimited task's share below the limit.
        for (int t = ArithmeticTask.MinTerms; t <= maxTerms; t++)
            Assert.That(drawn.Count(x => x == t) / (double)drawn.Length, Is.EqualTo(below.Count(x => x == t) / (double)below.Length).Within(0.015), $"{t} terms");
        Assert.Throws<ArgumentOutOfRangeException>(() => new ArithmeticTask(1, ArithmeticTask.MinTerms - 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ArithmeticTask(1, ArithmeticTask.MaxTerms + 1));
    }

    [Test]
    public void GeneratedTermsAreDigitsZeroToNine()
    {
        var task = new ArithmeticTask(seed: 4);
        var terms = Enumerable.Range(0, 2_000).SelectMany(_ => task.Next().Prompt.TrimEnd('=').Split('+')).ToArray();
        Assert.That(terms.Select(t => t.Length), Is.All.EqualTo(1), "one digit each");
        Assert.That(terms.Distinct().OrderBy(t => t), Is.EqualTo("0123456789".Select(c => c.ToString())), "every digit is drawn");
        Assert.That(ArithmeticTask.Make([8, 7, 5]).ReferenceResponse, Is.EqualTo("8+7=15;15+5=20#20"));
    }

    [Test]
    public void ResponseLengthsAreLongTailed()
    {
        var task = new ArithmeticTask(seed: 1);
        var lengths = Enumerable.Range(0, 20_000).Select(_ => task.Next().ReferenceResponse.Length).OrderBy(l => l).ToArray();
        int median = lengths[lengths.Length / 2];
        double beyond10x = lengths.Count(l => l >= 10 * median) / (double)lengths.Length;
        Assert.Multiple(() =>
        {
            Assert.That(median, Is.InRange(8, 20), "most answers are short");
            Assert.That(beyond10x, Is.InRange(0.003, 0.1), "a few are 10x the median or longer");
            Assert.That(lengths[^1], Is.GreaterThanOrEqualTo(30 * median), "the tail reaches 30x the median");
        });
    }
}
