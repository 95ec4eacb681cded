namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// One right-padded next-token batch for <see cref="Training.DecoderTrainingGraph.LanguageModelLossGraph"/>:
/// every array is [B, T] row-major; position t of a sample reads Ids[t] and predicts Targets[t] = its next token.
/// </summary>
internal sealed record LanguageModelBatch(int Batch, int Length, long[] Ids, long[] Positions, float[] AttentionMask,
    long[] Targets, float[] LossMask, int LossTokens)
{
    /// <summary>
    /// Builds the batch from token sequences (prompt, response, EOS) and their prompt lengths: inputs are all but the
    /// last token, targets all but the first, the loss covers targets after the prompt; padding gets mask 0.
    /// </summary>
    public static LanguageModelBatch RightPadded(IReadOnlyList<(int[] Ids, int PromptLength)> samples, int pad)
    {
        int b = samples.Count, t = samples.Max(s => s.Ids.Length - 1);
        var ids = new long[b * t];                  // [B, T]
        var positions = new long[b * t];            // [B, T]
        var mask = new float[b * t];                // [B, T]
        var targets = new long[b * t];              // [B, T]
        var lossMask = new float[b * t];            // [B, T]
        int lossTokens = 0;
        for (int r = 0; r < b; r++)
        {
            var (seq, promptLength) = samples[r];
            int n = seq.Length - 1;
            for (int c = 0; c < t; c++)
            {
                int k = r * t + c;
                positions[k] = c;
                if (c < n)
                {
                    ids[k] = seq[c];
                    targets[k] = seq[c + 1];
                    mask[k] = 1;
                    if (c + 1 >= promptLength) { lossMask[k] = 1; lossTokens++; }
                }
                else
                {
                    ids[k] = pad;
                    targets[k] = pad;
                }
            }
        }
        return new LanguageModelBatch(b, t, ids, positions, mask, targets, lossMask, lossTokens);
    }
}
