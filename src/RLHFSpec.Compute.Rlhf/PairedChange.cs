using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The change in held-out accuracy between two evaluations of the same prompts, answer by answer (a paired
/// comparison, as McNemar's test): of <see cref="Prompts"/> prompts, <see cref="WrongToRight"/> answers turned right
/// and <see cref="RightToWrong"/> turned wrong. Its standard error counts only the answers that changed, so it is far
/// smaller than two independent accuracies' would be when most answers stay as they were.
/// </summary>
public sealed record PairedChange
{
    [JsonPropertyName("first_iteration")] public int FirstIteration { get; init; }
    [JsonPropertyName("last_iteration")] public int LastIteration { get; init; }
    [JsonPropertyName("prompts")] public int Prompts { get; init; }
    [JsonPropertyName("wrong_to_right")] public int WrongToRight { get; init; }
    [JsonPropertyName("right_to_wrong")] public int RightToWrong { get; init; }
    /// <summary>Last accuracy minus first, as a share of the prompts.</summary>
    [JsonPropertyName("difference")] public double Difference { get; init; }
    /// <summary>Standard error of <see cref="Difference"/>: √(b + c − (c − b)²/n) / n for b right→wrong and c wrong→right of n.</summary>
    [JsonPropertyName("standard_error")] public double StandardError { get; init; }
    /// <summary><see cref="Difference"/> over <see cref="StandardError"/> (0 when no answer changed).</summary>
    [JsonPropertyName("z")] public double Z { get; init; }

    /// <summary>The paired change from <paramref name="first"/> to <paramref name="last"/> (the same prompts in the same order).</summary>
    public static PairedChange Of(IReadOnlyList<bool> first, IReadOnlyList<bool> last, int firstIteration, int lastIteration)
    {
        if (first.Count != last.Count) throw new ArgumentException($"the evaluations have {first.Count} and {last.Count} answers; a paired change needs the same prompts");
        if (first.Count == 0) throw new ArgumentException("a paired change needs at least one prompt");
        int n = first.Count, up = 0, down = 0;
        for (int i = 0; i < n; i++)
        {
            if (!first[i] && last[i]) up++;
            else if (first[i] && !last[i]) down++;
        }
        double difference = (up - down) / (double)n;
        double se = Math.Sqrt(Math.Max(0, up + down - (double)(up - down) * (up - down) / n)) / n;
        return new PairedChange
        {
            FirstIteration = firstIteration,
            LastIteration = lastIteration,
            Prompts = n,
            WrongToRight = up,
            RightToWrong = down,
            Difference = difference,
            StandardError = se,
            Z = se > 0 ? difference / se : 0,
        };
    }
}
