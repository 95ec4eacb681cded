namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    /// <summary>
    /// Checks the ragged batch, the block tables of every slot a sample touches, the tree mask and the buffer sizes.
    /// Query values are not scanned for NaN/Inf (activations: garbage in, garbage out) and cache words are not
    /// scanned either; everything that decides which memory a kernel reads is checked, so a bad argument can never
    /// make a kernel read outside its buffers or another sample's slots.
    /// </summary>
    internal static void Attention(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(keyCache);
        ArgumentNullException.ThrowIfNull(valueCache);
        ArgumentNullException.ThrowIfNull(output);
        try { layout.Validate(); }
        catch (ArgumentException e) { throw new ArgumentException(e.Message, nameof(layout)); }

        int samples = batch.ContextLens.Length;
        RequireOffsets(batch.QueryOffsets, samples, nameof(batch.QueryOffsets));
        Require(batch.NumHeads > 0, nameof(batch.NumHeads), $"{batch.NumHeads} heads, must be positive");
        Require(batch.NumHeads % layout.NumKvHeads == 0, nameof(batch.NumHeads),
            $"{batch.NumHeads} query heads are not a multiple of the layout's {layout.NumKvHeads} KV heads");
        Require(float.IsFinite(batch.Scale), nameof(batch.Scale), $"scale {batch.Scale} is not finite");
        Require(batch.MaxBlocksPerSample >= 0, nameof(batch.MaxBlocksPerSample), $"{batch.MaxBlocksPerSample} is negative");
        RequireLength(batch.BlockTables, (long)samples * batch.MaxBlocksPerSample, nameof(batch.BlockTables));

        int numTokens = batch.NumTokens;
        long capacity = (long)batch.MaxBlocksPerSample * layout.BlockSize;
        int maxNew = 0;
        for (int s = 0; s < samples; s++)
        {
            int context = batch.ContextLens[s], n = batch.QueryOffsets[s + 1] - batch.QueryOffsets[s];
            if (context < 0)
                throw new ArgumentOutOfRangeException(nameof(batch.ContextLens), $"ContextLens[{s}] = {context} is negative");
            long total = (long)context + n;
            if (total > capacity)
                throw new ArgumentOutOfRangeException(nameof(batch.ContextLens),
                    $"sample {s}: context {context} + {n} new tokens exceed its {batch.MaxBlocksPerSample} blocks of {layout.BlockSize} slots");
            long blocks = (total + layout.BlockSize - 1) / layout.BlockSize;
            for (int b = 0; b < blocks; b++)
            {
                int physical = batch.BlockTables[s * batch.MaxBlocksPerSample + b];
                if (physical < 0 || physical >= layout.NumBlocks)
                    throw new ArgumentOutOfRangeException(nameof(batch.BlockTables),
                        $"BlockTables[{s * batch.MaxBlocksPerSample + b}] (sample {s}, block {b}) = {physical} is outside [0, {layout.NumBlocks})");
            }
            maxNew = Math.Max(maxNew, n);
        }

        if (!batch.TreeMask.IsEmpty)
        {
            int needWords = (maxNew + 31) / 32;
            Require(batch.MaskWords >= needWords && batch.MaskWords > 0, nameof(batch.MaskWords),
                $"{batch.MaskWords} mask words per token, a sample with {maxNew} new tokens needs at least {Math.Max(needWords, 1)}");
            RequireLength(batch.TreeMask, (long)numTokens * batch.MaskWords, nameof(batch.TreeMask));
            for (int s = 0; s < samples; s++)
            {
                int first = batch.QueryOffsets[s], n = batch.QueryOffsets[s + 1] - first;
                for (int i = 0; i < n; i++)
                {
                    var row = batch.TreeMask.Slice((first + i) * batch.MaskWords, batch.MaskWords);
                    if ((row[i / 32] >> (i % 32) & 1) == 0)
                        throw new ArgumentException($"{nameof(batch.TreeMask)}: token {first + i} (sample {s}, node {i}) does not see itself", nameof(batch.TreeMask));
                    // Bits at or beyond n would name slots past the sample's new tokens.
                    for (int w = n / 32; w < row.Length; w++)
                    {
                        uint beyond = w == n / 32 ? row[w] & ~((1u << (n % 32)) - 1) : row[w];
                        if (beyond != 0)
                            throw new ArgumentException($"{nameof(batch.TreeMask)}: token {first + i} (sample {s}) sees new tokens at or beyond its sample's {n}", nameof(batch.TreeMask));
                    }
                }
            }
        }

        long elements = (long)numTokens * batch.NumHeads * layout.HeadDim;
        RequireAtLeast(query, elements, nameof(query));
        RequireAtLeast(output, elements, nameof(output));
        RequireAtLeast(keyCache, layout.TotalWords, nameof(keyCache));
        RequireAtLeast(valueCache, layout.TotalWords, nameof(valueCache));
    }
}
