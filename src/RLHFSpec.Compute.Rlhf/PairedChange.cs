using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The change in held-out accuracy between two evaluations of the same prompts, answer by answer (a paired
/// comparison, as McNemar's test): of <see cref="Prompts"/> prompts, <see cref="WrongToRight"/> answers turned right
/// and <see cref="RightToWrong"/> turned wrong. Its standard error counts only the answers that changed, so it is far
/// smaller than two independent accuracies' would be when most answers stay as they were. A set drawn from a task
/// repeats prompts (the default task has only 100 two-term prompts), and a greedy answer is the same for every copy,
/// so copies are not independent observations: given each answer's prompt, the standard error is the cluster-robust
/// one over distinct prompts (<see cref="DistinctPrompts"/>), which equals the plain one when no prompt repeats.
/// </summary>
public sealed record PairedChange
{
    [JsonPropertyName("first_iteration")] public int FirstIteration { get; init; }
    [JsonPropertyName("last_iteration")] public int LastIteration { get; init; }
    [JsonPropertyName("prompts")] public int Prompts { get; init; }
    /// <summary>Distinct prompts among <see cref="Prompts"/> (the clusters of the standard error).</summary>
    [JsonPropertyName("distinct_prompts")] public int DistinctPrompts { get; init; }
    [JsonPropertyName("wrong_to_right")] public int WrongToRight { get; init; }
    [JsonPropertyName("right_to_wrong")] public int RightToWrong { get; init; }
    /// <summary>Last accuracy minus first, as a share of the prompts.</summary>
    [JsonPropertyName("difference")] public double Difference { get; init; }
    /// <summary>
    /// Standard error of <see cref="Difference"/>: √(Σ_g (D_g − n_g·Δ)²) / n over the distinct prompts g, with D_g the
    /// sum of the changes (−1, 0, +1) of g's n_g answers and Δ the difference; without repeats √(b + c − (c − b)²/n) / n
    /// for b right→wrong and c wrong→right of n.
    /// </summary>
    [JsonPropertyName("standard_error")] public double StandardError { get; init; }
    /// <summary><see cref="Difference"/> over <see cref="StandardError"/> (0 when no answer changed).</summary>
    [JsonPropertyName("z")] public double Z { get; init; }

    /// <summary>
    /// The paired change from <paramref name="first"/> to <paramref name="last"/> (the same prompts in the same order);
    /// <paramref name="prompts"/>, when given, names each answer's prompt, and answers to one prompt form one cluster.
    /// </summary>
    public static PairedChange Of(IReadOnlyList<bool> first, IReadOnlyList<bool> last, int firstIteration, int lastIteration, IReadOnlyList<string>? prompts = null)
    {
        if (first.Count != last.Count) throw new ArgumentException($"the evaluations have {first.Count} and {last.Count} answers; a paired change needs the same prompts");
        if (first.Count == 0) throw new ArgumentException("a paired change needs at least one prompt");
        if (prompts is not null && prompts.Count != first.Count) throw new ArgumentException($"{prompts.Count} prompts for {first.Count} answers");
        int n = first.Count, up = 0, down = 0;
        var clusters = new Dictionary<string, (int Answers, int Change)>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++)
        {
            int change = (last[i] ? 1 : 0) - (first[i] ? 1 : 0);
            if (change > 0) up++;
            else if (change < 0) down++;
            string key = prompts?[i] ?? i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var (answers, sum) = clusters.GetValueOrDefault(key);
            clusters[key] = (answers + 1, sum + change);
        }
        double difference = (up - down) / (double)n, squares = 0;
        foreach (var (answers, sum) in clusters.Values) squares += (sum - answers * difference) * (sum - answers * difference);
        double se = Math.Sqrt(squares) / n;
        return new PairedChange
        {
            FirstIteration = firstIteration,
            LastIteration = lastIteration,
            Prompts = n,
            DistinctPrompts = clusters.Count,
            WrongToRight = up,
            RightToWrong = down,
            Difference = difference,
            StandardError = se,
            Z = se > 0 ? difference / se : 0,
        };
    }
}
