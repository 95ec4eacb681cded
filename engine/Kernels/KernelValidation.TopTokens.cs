namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    /// <summary>TopTokens checks: one setting per requested row, rows inside the buffer, outputs of [rows, count].</summary>
    internal static void TopTokens(ReadOnlySpan<SamplingParams> settings, DeviceBuffer<float> logits, ReadOnlySpan<int> rows, int vocabSize, int count, Span<int> tokens, Span<double> probabilities)
    {
        ArgumentNullException.ThrowIfNull(logits);
        if (vocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "vocabSize must be positive");
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be positive");
        RequireLength(settings, rows.Length, nameof(settings));
        for (int r = 0; r < settings.Length; r++) settings[r].Validate(nameof(settings), r);
        RequireRange(rows, 0, logits.Length / vocabSize, nameof(rows));
        RequireLength<int>(tokens, (long)rows.Length * count, nameof(tokens));
        RequireLength<double>(probabilities, (long)rows.Length * count, nameof(probabilities));
    }
}
