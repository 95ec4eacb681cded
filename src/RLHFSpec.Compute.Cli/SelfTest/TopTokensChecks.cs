using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Cli.SelfTest;

/// <summary>top_tokens: tokens exactly and probabilities within 1e-5 relative, against the reference.</summary>
internal static class TopTokensChecks
{
    private const double RelativeTolerance = 1e-5;

    public static IEnumerable<KernelCheck> All()
    {
        yield return new KernelCheck("top_tokens", "48 rows x 32000 vocab, 8 tokens, greedy / T 0.7-1.3 (some top-p)", TopTokens);
    }

    private static string? TopTokens(ComputeBackend backend, Random random, out string agreement)
    {
        agreement = "";
        const int rows = 48, vocab = 32000, count = 8;
        // Distinct logits (a shuffled ladder in about ±6), so the ranking has no ties a float sum could reorder.
        var logits = new float[rows * vocab];
        for (int r = 0; r < rows; r++)
        {
            var ladder = Enumerable.Range(0, vocab).OrderBy(_ => random.Next()).ToArray();
            for (int i = 0; i < vocab; i++) logits[r * vocab + i] = (ladder[i] - vocab / 2) * (12f / vocab);
        }
        var requested = Enumerable.Range(0, rows).Select(_ => random.Next(rows)).ToArray();
        var settings = requested.Select((_, r) => random.Next(4) switch
        {
            0 => SamplingParams.Greedy((uint)r, 0),
            3 => SamplingParams.Random((float)(0.7 + random.NextDouble() * 0.6), 1, (uint)r, 0, topP: 0.9f),
            _ => SamplingParams.Random((float)(0.7 + random.NextDouble() * 0.6), 1, (uint)r, 0),
        }).ToArray();
        using var buffer = backend.Allocate<float>(logits.Length, "logits");
        buffer.Write(logits);
        var tokens = new int[rows * count];
        var probabilities = new double[rows * count];
        backend.TopTokens(settings, buffer, requested, vocab, count, tokens, probabilities);
        double worst = 0;
        for (int r = 0; r < rows; r++)
        {
            var expected = ReferenceTopTokens.TopTokens(logits.AsSpan(requested[r] * vocab, vocab), settings[r], count);
            for (int j = 0; j < count; j++)
            {
                var (token, probability) = j < expected.Count ? expected[j] : (-1, 0.0);
                if (tokens[r * count + j] != token) return $"row {r}, rank {j}: token {tokens[r * count + j]}, reference {token}";
                double error = probability == 0 ? Math.Abs(probabilities[r * count + j]) : Math.Abs(probabilities[r * count + j] / probability - 1);
                worst = Math.Max(worst, error);
                if (!(error <= RelativeTolerance)) return $"row {r}, rank {j}: probability {probabilities[r * count + j]}, reference {probability}";
            }
        }
        agreement = $"{rows * count} tokens equal, max relative probability error {worst:0.0e+0}";
        return null;
    }
}
