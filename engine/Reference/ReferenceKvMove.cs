using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Reference;

/// <summary>
/// Plain host reference of kv_move (AppendKv and CopyKv) on arrays: scalar loops in the order the contract
/// defines, deliberately independent of the backends' code. Tests and the CLI's selftest compare both backends
/// with it word for word.
/// </summary>
public static class ReferenceKvMove
{
    /// <summary>Row t of <paramref name="source"/> // [slots.Length, RowElements] into cache slot slots[t].</summary>
    /// <param name="cache">// [NumBlocks, BlockSize, NumKvHeads, HeadDim] as words, modified in place.</param>
    public static void Append(float[] source, uint[] cache, KvLayout layout, int[] slots)
    {
        int elements = layout.RowElements;
        int words = layout.RowWords;
        for (int t = 0; t < slots.Length; t++)
        {
            long row = (long)slots[t] * words;
            for (int w = 0; w < words; w++)
            {
                if (layout.DType == KvDType.F32)
                {
                    cache[row + w] = BitConverter.SingleToUInt32Bits(source[(long)t * elements + w]);
                }
                else
                {
                    // Two fp16 per word, the even element in the low half; (Half) rounds to nearest even.
                    uint low = BitConverter.HalfToUInt16Bits((Half)source[(long)t * elements + 2 * w]);
                    uint high = BitConverter.HalfToUInt16Bits((Half)source[(long)t * elements + 2 * w + 1]);
                    cache[row + w] = low | (high << 16);
                }
            }
        }
    }

    /// <summary>
    /// Copies row sourceRows[p] of <paramref name="source"/> to row destinationRows[p] of <paramref name="destination"/>
    /// (which may be the same array), one pair after another in order. Segments are independent by contract, so
    /// running them one after another gives the result of running them in parallel.
    /// </summary>
    public static void Copy(uint[] source, uint[] destination, int[] sourceRows, int[] destinationRows, int[] segmentOffsets, int rowWords)
    {
        var row = new uint[rowWords];
        for (int g = 0; g + 1 < segmentOffsets.Length; g++)
            for (int p = segmentOffsets[g]; p < segmentOffsets[g + 1]; p++)
            {
                Array.Copy(source, (long)sourceRows[p] * rowWords, row, 0, rowWords);
                Array.Copy(row, 0, destination, (long)destinationRows[p] * rowWords, rowWords);
            }
    }
}
