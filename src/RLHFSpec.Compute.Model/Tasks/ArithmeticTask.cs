using System.Globalization;
using System.Text;

namespace RLHFSpec.Compute.Model.Tasks;

/// <summary>
/// The default task: add a list of single-digit numbers, showing the running sum. Prompt <c>"8+7+5="</c>, response
/// <c>"8+7=15;15+5=20#20"</c>: one worked step per term, then <c>#</c> and the answer. The number of terms is
/// long-tailed (most prompts have 2–4 terms, a few dozens), so response lengths are long-tailed as in real RLHF
/// rollouts (the tail is 10–50× the median). The verifier is exact: the reward is 1 when the text after the last
/// <c>#</c> is the right sum, else 0, whatever the steps say.
/// <para>
/// Terms are digits 0–9 (<see cref="MaxTerm"/>): with two-digit terms (the first version of this task) a policy of a
/// few million weights learned the format and the copies but not the sums in a CPU pretraining budget (3 % exact
/// after 11.5 minutes); with digit terms it reaches partial accuracy in under three minutes. <see cref="Make"/> and
/// the verifier take any non-negative terms.
/// </para>
/// </summary>
public sealed class ArithmeticTask
{
    /// <summary>Every character a prompt or response can contain (a character tokenizer's vocabulary).</summary>
    public const string Alphabet = "0123456789+=;#";

    public const int MinTerms = 2;
    public const int MaxTerms = 64;

    /// <summary>The largest term the generator draws (terms are 0–<see cref="MaxTerm"/>).</summary>
    public const int MaxTerm = 9;

    /// <summary>
    /// Names this task's prompt distribution and format; pretrain.json records it, and default models pretrained for
    /// another version count as missing (the tokenizer alone cannot tell them apart).
    /// </summary>
    public const string Version = "running-sum/digits-0-9/v2";

    private readonly Random _random;
    private readonly int _maxTerms;

    public ArithmeticTask(int seed) : this(seed, MaxTerms) { }

    /// <summary>
    /// The task restricted to prompts of at most <paramref name="maxTerms"/> terms (a curriculum over lengths): a longer
    /// draw is drawn again, so the lengths keep the task's distribution conditioned on the limit. With
    /// <see cref="MaxTerms"/> it is the task itself, draw for draw.
    /// </summary>
    public ArithmeticTask(int seed, int maxTerms)
    {
        if (maxTerms < MinTerms || maxTerms > MaxTerms)
            throw new ArgumentOutOfRangeException(nameof(maxTerms), maxTerms, $"must be in [{MinTerms}, {MaxTerms}]");
        _random = new Random(seed);
        _maxTerms = maxTerms;
    }

    /// <summary>The number of terms: 2 + a discrete Pareto draw (tail index 1.2), capped at <see cref="MaxTerms"/>, redrawn above the task's limit.</summary>
    private int DrawTerms()
    {
        while (true)
        {
            double u = 1 - _random.NextDouble(); // (0, 1]
            double pareto = Math.Pow(u, -1 / 1.2) - 1; // ≥ 0, heavy-tailed
            int terms = (int)Math.Min(MinTerms + Math.Floor(pareto), MaxTerms);
            if (terms <= _maxTerms) return terms;
        }
    }

    /// <summary>The next prompt; the generator never runs out.</summary>
    public TaskSample Next()
    {
        int count = DrawTerms();
        var terms = new int[count];
        for (int i = 0; i < count; i++) terms[i] = _random.Next(0, MaxTerm + 1);
        return Make(terms);
    }

    /// <summary>The task sample for given terms (tests and evaluation sets use it).</summary>
    public static TaskSample Make(IReadOnlyList<int> terms)
    {
        if (terms.Count < 1) throw new ArgumentException("a prompt needs at least one term", nameof(terms));
        var prompt = new StringBuilder();
        var response = new StringBuilder();
        long sum = terms[0];
        prompt.Append(terms[0].ToString(CultureInfo.InvariantCulture));
        for (int i = 1; i < terms.Count; i++)
        {
            if (terms[i] < 0) throw new ArgumentException($"term {i} = {terms[i]}: terms must be non-negative", nameof(terms));
            prompt.Append('+').Append(terms[i].ToString(CultureInfo.InvariantCulture));
            long next = sum + terms[i];
            if (i > 1) response.Append(';');
            response.Append(sum.ToString(CultureInfo.InvariantCulture)).Append('+')
                .Append(terms[i].ToString(CultureInfo.InvariantCulture)).Append('=')
                .Append(next.ToString(CultureInfo.InvariantCulture));
            sum = next;
        }
        prompt.Append('=');
        response.Append('#').Append(sum.ToString(CultureInfo.InvariantCulture));
        return new TaskSample(prompt.ToString(), response.ToString(), sum);
    }

    /// <summary>
    /// The exact verifier: 1 if <paramref name="response"/>'s text after its last <c>#</c> is the sum of
    /// <paramref name="prompt"/>'s terms, else 0. A malformed prompt is an error (it is ours); a malformed response
    /// just earns 0.
    /// </summary>
    public static double Reward(string prompt, string response)
    {
        long expected = Answer(prompt);
        int hash = response.LastIndexOf('#');
        if (hash < 0) return 0;
        var tail = response.AsSpan(hash + 1);
        if (tail.Length == 0 || tail.Length > 18) return 0;
        foreach (char c in tail) if (c is < '0' or > '9') return 0;
        return long.Parse(tail, NumberStyles.None, CultureInfo.InvariantCulture) == expected ? 1 : 0;
    }

    /// <summary>The sum a prompt asks for.</summary>
    public static long Answer(string prompt)
    {
        if (!prompt.EndsWith('=')) throw new FormatException($"prompt '{prompt}': must end with '='");
        long sum = 0;
        foreach (var part in prompt[..^1].Split('+'))
        {
            if (part.Length == 0 || part.Length > 9 || !part.All(char.IsAsciiDigit))
                throw new FormatException($"prompt '{prompt}': term '{part}' is not a number");
            sum += long.Parse(part, NumberStyles.None, CultureInfo.InvariantCulture);
        }
        return sum;
    }
}
