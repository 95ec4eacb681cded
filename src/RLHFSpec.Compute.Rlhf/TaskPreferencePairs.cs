using System.Globalization;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Preference pairs from the default task, so <c>rlhfspec train-rm</c> runs with no data: chosen = the reference
/// worked response, rejected = the same response with one mistake: a wrong final answer (the worked steps stay
/// right) or a wrong intermediate sum (carried on to the steps after it and the answer, as a real slip would be).
/// The task's exact verifier scores every chosen response 1 and every rejected one 0.
/// </summary>
public static class TaskPreferencePairs
{
    /// <param name="maxTerms">Prompts with more terms are skipped (the task's long tail makes sequences of hundreds of tokens).</param>
    public static IReadOnlyList<PreferencePair> Generate(int count, int seed, int maxTerms = ArithmeticTask.MaxTerms)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "must be >= 1");
        if (maxTerms < ArithmeticTask.MinTerms) throw new ArgumentOutOfRangeException(nameof(maxTerms), maxTerms, $"must be >= {ArithmeticTask.MinTerms}");
        var task = new ArithmeticTask(seed);
        var random = new Random(unchecked(seed * 7919 + 1));
        var pairs = new List<PreferencePair>(count);
        for (int i = 0; i < count; i++)
        {
            var sample = task.Next();
            var terms = sample.Prompt[..^1].Split('+').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray();
            if (terms.Length > maxTerms) { i--; continue; }
            string rejected = random.Next(2) == 0 || terms.Length < 3
                ? WrongAnswer(sample, random)
                : WrongStep(terms, random);
            pairs.Add(new PreferencePair(sample.Prompt, sample.ReferenceResponse, rejected, $"default task pair {i}"));
        }
        return pairs;
    }

    /// <summary>A nonzero offset in ±1..±10 that keeps <paramref name="value"/> non-negative.</summary>
    private static long Offset(long value, Random random)
    {
        while (true)
        {
            long d = random.Next(1, 11) * (random.Next(2) == 0 ? -1 : 1);
            if (value + d >= 0) return d;
        }
    }

    private static string WrongAnswer(TaskSample sample, Random random)
    {
        string response = sample.ReferenceResponse;
        return response[..(response.LastIndexOf('#') + 1)] + (sample.Answer + Offset(sample.Answer, random)).ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>The worked response with step k's sum off by a small offset, and every later step built on it.</summary>
    private static string WrongStep(int[] terms, Random random)
    {
        int wrong = random.Next(1, terms.Length - 1);      // not the last step: that one is a wrong answer
        var steps = new List<string>();
        long sum = terms[0];
        for (int i = 1; i < terms.Length; i++)
        {
            long next = sum + terms[i];
            if (i == wrong) next += Offset(next, random);
            steps.Add(string.Create(CultureInfo.InvariantCulture, $"{sum}+{terms[i]}={next}"));
            sum = next;
        }
        return string.Join(';', steps) + "#" + sum.ToString(CultureInfo.InvariantCulture);
    }
}
