using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>
/// What the backends' top-tokens kernels share: which rows they rank themselves, and the host path for the others.
/// A row that top-k or top-p truncates needs the row sorted (or radix-selected and bisected) before its probabilities
/// are known; draft trees rarely sample that way, so those rows go through the reference on the host.
/// </summary>
internal static class TopTokenRows
{
    /// <summary>Most tokens per row the Vulkan kernel selects (each thread keeps a sorted list of that many); more go through the host.</summary>
    internal const int MaxDeviceCount = 16;

    /// <summary>True when <paramref name="p"/> truncates a row of <paramref name="vocab"/> logits (top-k or top-p on, not greedy).</summary>
    internal static bool Truncates(in SamplingParams p, int vocab) => !p.IsGreedy && ((p.TopK > 0 && p.TopK < vocab) || p.TopP < 1f);

    /// <summary>The row's status: NaN or +Inf anywhere, or no finite value, as the kernels report it.</summary>
    internal static int Status(ReadOnlySpan<float> row)
    {
        bool anyFinite = false;
        foreach (float x in row)
        {
            if (float.IsNaN(x) || float.IsPositiveInfinity(x)) return KernelValidation.RowNotFinite;
            anyFinite |= x != float.NegativeInfinity;
        }
        return anyFinite ? KernelValidation.RowOk : KernelValidation.RowNoFiniteLogit;
    }

    /// <summary>
    /// Ranks <paramref name="row"/> (its <see cref="Status"/> checked by the caller) with the reference and writes its
    /// answer to <paramref name="tokens"/> / <paramref name="probabilities"/> // [count], −1 / 0 past its tokens.
    /// </summary>
    internal static void OnHost(ReadOnlySpan<float> row, in SamplingParams p, Span<int> tokens, Span<double> probabilities)
    {
        var top = ReferenceTopTokens.TopTokens(row, p, tokens.Length);
        for (int j = 0; j < tokens.Length; j++)
        {
            tokens[j] = j < top.Count ? top[j].Token : -1;
            probabilities[j] = j < top.Count ? top[j].Probability : 0;
        }
    }
}
