using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Reference;

/// <summary>
/// Plain paged attention, the yardstick for every backend: scalar loops in double, one (token, head) at a time,
/// two-pass softmax. Deliberately shares no code with the backends. Same semantics as
/// <see cref="ComputeBackend.Attention"/>: a token that sees no slot at all gets a zero output row.
/// </summary>
public static class ReferenceAttention
{
    /// <param name="query">// [numTokens, NumHeads, HeadDim]</param>
    /// <param name="keyCache">// [NumBlocks, BlockSize, NumKvHeads, HeadDim] as words</param>
    /// <param name="valueCache">same layout as <paramref name="keyCache"/></param>
    /// <param name="output">// [numTokens, NumHeads, HeadDim]</param>
    public static void Compute(in AttentionBatch batch, ReadOnlySpan<float> query, ReadOnlySpan<uint> keyCache, ReadOnlySpan<uint> valueCache, KvLayout layout, Span<float> output)
    {
        int d = layout.HeadDim;
        int groupSize = batch.NumHeads / layout.NumKvHeads;
        var scores = new List<double>();
        var slots = new List<long>();
        for (int s = 0; s < batch.NumSamples; s++)
        {
            int first = batch.QueryOffsets[s], n = batch.QueryOffsets[s + 1] - first, context = batch.ContextLens[s];
            for (int i = 0; i < n; i++)
            {
                int t = first + i;
                slots.Clear();
                for (int logical = 0; logical < context + n; logical++)
                    if (Sees(batch, t, i, logical - context))
                        slots.Add((long)batch.BlockTables[s * batch.MaxBlocksPerSample + logical / layout.BlockSize] * layout.BlockSize + logical % layout.BlockSize);

                for (int h = 0; h < batch.NumHeads; h++)
                {
                    int kvHead = h / groupSize;
                    var q = query.Slice((t * batch.NumHeads + h) * d, d);
                    var o = output.Slice((t * batch.NumHeads + h) * d, d);
                    o.Clear();
                    if (slots.Count == 0) continue;

                    scores.Clear();
                    double max = double.NegativeInfinity;
                    foreach (long slot in slots)
                    {
                        double dot = 0;
                        for (int e = 0; e < d; e++) dot += (double)q[e] * Element(keyCache, layout, slot, kvHead, e);
                        double score = batch.Scale * dot;
                        scores.Add(score);
                        max = Math.Max(max, score);
                    }
                    double sum = 0;
                    for (int k = 0; k < scores.Count; k++) { scores[k] = Math.Exp(scores[k] - max); sum += scores[k]; }
                    for (int e = 0; e < d; e++)
                    {
                        double acc = 0;
                        for (int k = 0; k < slots.Count; k++) acc += scores[k] * Element(valueCache, layout, slots[k], kvHead, e);
                        o[e] = (float)(acc / sum);
                    }
                }
            }
        }
    }

    /// <summary>Whether token <paramref name="t"/> (local index <paramref name="i"/>) sees new token <paramref name="j"/>; j &lt; 0 is committed context.</summary>
    private static bool Sees(in AttentionBatch batch, int t, int i, int j)
    {
        if (j < 0) return true;
        if (batch.TreeMask.IsEmpty) return j <= i;
        return (batch.TreeMask[t * batch.MaskWords + j / 32] >> (j % 32) & 1) != 0;
    }

    /// <summary>Element <paramref name="e"/> of KV head <paramref name="kvHead"/> in cache slot <paramref name="slot"/>, decoded to double.</summary>
    public static double Element(ReadOnlySpan<uint> cache, KvLayout layout, long slot, int kvHead, int e)
    {
        long index = (long)kvHead * layout.HeadDim + e;
        if (layout.DType == KvDType.F32)
            return BitConverter.UInt32BitsToSingle(cache[(int)(slot * layout.RowWords + index)]);
        uint word = cache[(int)(slot * layout.RowWords + index / 2)];
        ushort bits = (ushort)(index % 2 == 0 ? word & 0xFFFF : word >> 16);
        return (double)BitConverter.UInt16BitsToHalf(bits);
    }
}
