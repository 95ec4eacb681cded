using System.Buffers;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec AttentionShader = new("attention", Bindings: 7, PushConstantBytes: 76);
    private static readonly ShaderSpec AttentionCombineShader = new("attention_combine", Bindings: 2, PushConstantBytes: 16);

    /// <summary>
    /// Loop iterations one invocation may spend on its key range. llvmpipe ends an invocation silently after 65535
    /// loop iterations in all; this leaves room for the loops outside the key walk. On GPUs it is a sensible
    /// flash-decoding split length too (a few thousand keys per workgroup).
    /// </summary>
    private const long AttentionIterationBudget = 30000;

    /// <summary>(token, head) rows one workgroup may serve; mirrors MAX_ROWS in attention.comp.</summary>
    private const int AttentionMaxRows = 8;

    [StructLayout(LayoutKind.Sequential)]
    private struct AttentionPush
    {
        public uint TokenBase, QueryShift, OutputShift, NumHeads, GroupSize, RowWords, BlockSize, MaxBlocks, MaskWords, Causal;
        public uint SectionSample, SectionOffsets, SectionContexts, SectionTables, SectionMask;
        public float Scale;
        public uint KeysPerSplit, Splits, TokenEnd;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct AttentionCombinePush { public uint Elements, HeadDim, Splits, OutputShift; }

    /// <summary>
    /// Records attention.comp: a workgroup per (tile of up to TQ tokens of one sample, slice of HG heads of one GQA
    /// group), grid x over tiles, y over head slices, z over key splits (then attention_combine.comp merges them).
    /// Several dispatches when the query/output rows exceed the binding range or the grid limit. The caches are
    /// bound whole.
    /// </summary>
    protected override void AttentionCore(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output)
    {
        var q = Own(query, nameof(query));
        var k = Own(keyCache, nameof(keyCache));
        var v = Own(valueCache, nameof(valueCache));
        var o = Own(output, nameof(output));
        long cacheBytes = layout.TotalWords * 4;
        if (cacheBytes > Limits.MaxStorageBufferRange)
            throw new ComputeException($"attention: one layer's KV cache ({cacheBytes} bytes, {layout}) exceeds the device's maxStorageBufferRange "
                + $"({Limits.MaxStorageBufferRange} bytes); the KV cache must size layers under it");

        int local = AttentionWorkgroupSize();
        int groupSize = batch.NumHeads / layout.NumKvHeads;
        int headsPerGroup = AttentionHeadsPerWorkgroup(groupSize, layout.HeadDim, local);
        int maxNew = 0;
        for (int s = 0; s < batch.NumSamples; s++) maxNew = Math.Max(maxNew, batch.QueryOffsets[s + 1] - batch.QueryOffsets[s]);
        // Tokens per tile: as many as the row budget and shared memory allow, no more than a sample has.
        int tileTokens = Math.Max(1, Math.Min(AttentionMaxRows / headsPerGroup, maxNew));
        while (tileTokens > 1 && AttentionSharedBytes(tileTokens * headsPerGroup, layout.HeadDim, local) > Limits.MaxSharedMemoryBytes) tileTokens--;
        int rows = tileTokens * headsPerGroup;
        int keysPerSplit = AttentionKeysPerSplit(layout.HeadDim, rows, tileTokens, local);

        // Metadata in one upload: token → sample | offsets | context lengths | block tables | tree mask.
        int samples = batch.NumSamples, numTokens = batch.NumTokens;
        int secOffsets = numTokens, secContexts = secOffsets + samples + 1, secTables = secContexts + samples;
        int secMask = secTables + batch.BlockTables.Length, metaLength = secMask + batch.TreeMask.Length;
        int[] meta = ArrayPool<int>.Shared.Rent(metaLength);
        int[] tiles = ArrayPool<int>.Shared.Rent(numTokens);
        try
        {
            long maxKeys = 0;
            for (int s = 0; s < samples; s++)
            {
                int n = batch.QueryOffsets[s + 1] - batch.QueryOffsets[s];
                meta.AsSpan(batch.QueryOffsets[s], n).Fill(s);
                if (n > 0) maxKeys = Math.Max(maxKeys, (long)batch.ContextLens[s] + n);
            }
            int splits = (int)Math.Max(1, (maxKeys + keysPerSplit - 1) / keysPerSplit);
            batch.QueryOffsets.CopyTo(meta.AsSpan(secOffsets));
            batch.ContextLens.CopyTo(meta.AsSpan(secContexts));
            batch.BlockTables.CopyTo(meta.AsSpan(secTables));
            MemoryMarshal.Cast<uint, int>(batch.TreeMask).CopyTo(meta.AsSpan(secMask));
            var metaBinding = Upload<int>(meta.AsSpan(0, metaLength));

            var push = new AttentionPush
            {
                NumHeads = (uint)batch.NumHeads, GroupSize = (uint)groupSize, RowWords = (uint)layout.RowWords,
                BlockSize = (uint)layout.BlockSize, MaxBlocks = (uint)batch.MaxBlocksPerSample, MaskWords = (uint)batch.MaskWords,
                Causal = batch.TreeMask.IsEmpty ? 1u : 0u, SectionSample = 0, SectionOffsets = (uint)secOffsets,
                SectionContexts = (uint)secContexts, SectionTables = (uint)secTables, SectionMask = (uint)secMask, Scale = batch.Scale,
                KeysPerSplit = (uint)keysPerSplit, Splits = (uint)splits,
            };
            Span<int> constants = [local, layout.HeadDim, headsPerGroup, layout.DType == KvDType.F16 ? 1 : 0, tileTokens];

            long rowElements = (long)batch.NumHeads * layout.HeadDim;
            long bindable = (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment) / 4 / rowElements;
            long partialRow = (long)batch.NumHeads * splits * (layout.HeadDim + 2);   // partial floats per token
            if (splits > 1) bindable = Math.Min(bindable, (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment) / 4 / partialRow);
            int tokensPerDispatch = (int)Math.Min(Math.Min(bindable, Limits.MaxWorkgroupCountX), int.MaxValue);
            if (tokensPerDispatch < 1)
                throw new ComputeException($"attention: one token's {rowElements} query elements exceed maxStorageBufferRange");
            uint groupsY = (uint)(batch.NumHeads / headsPerGroup);
            var partial = Scratch<float>("attention-partial", splits > 1 ? Math.Min(tokensPerDispatch, numTokens) * partialRow : 1);
            Span<int> combineConstants = [256];
            for (int first = 0; first < numTokens; first += tokensPerDispatch)
            {
                int count = Math.Min(tokensPerDispatch, numTokens - first);
                // Tiles: runs of up to tileTokens tokens of one sample, within [first, first + count).
                int numTiles = 0;
                for (int s = 0; s < samples; s++)
                {
                    int begin = Math.Max(first, batch.QueryOffsets[s]), end = Math.Min(first + count, batch.QueryOffsets[s + 1]);
                    for (int t = begin; t < end; t += tileTokens) tiles[numTiles++] = t;
                }
                Span<Binding> bindings =
                [
                    q.Bind(first * rowElements, count * rowElements, BindingAccess.Read, out push.QueryShift),
                    Binding.Read(k.Raw),
                    Binding.Read(v.Raw),
                    o.Bind(first * rowElements, count * rowElements, BindingAccess.Write, out push.OutputShift),
                    metaBinding,
                    Binding.Write(partial.Raw),
                    Upload<int>(tiles.AsSpan(0, numTiles)),
                ];
                push.TokenBase = (uint)first;
                push.TokenEnd = (uint)(first + count);
                Dispatch(AttentionShader, bindings, push, (uint)numTiles, groupsY, (uint)splits, constants);
                if (splits == 1) continue;
                long elements = count * rowElements;
                Span<Binding> combineBindings =
                [
                    Binding.Read(partial.Raw),
                    o.Bind(first * rowElements, elements, BindingAccess.Write, out uint outputShift),
                ];
                var combine = new AttentionCombinePush { Elements = (uint)elements, HeadDim = (uint)layout.HeadDim, Splits = (uint)splits, OutputShift = outputShift };
                Dispatch(AttentionCombineShader, combineBindings, combine, (uint)Math.Min(Groups(elements, 256), Limits.MaxWorkgroupCountX), 1, 1, combineConstants);
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(meta);
            ArrayPool<int>.Shared.Return(tiles);
        }
    }

    /// <summary>Keys one workgroup walks (a multiple of <paramref name="local"/>), from a conservative count of the
    /// shader's loop iterations per chunk of <paramref name="local"/> keys.</summary>
    private int AttentionKeysPerSplit(int headDim, int rows, int tileTokens, int local)
    {
        long subgroups = (local + Limits.SubgroupSize - 1) / Math.Max(1, Limits.SubgroupSize);
        long perChunk = 4L * tileTokens                                      // which tokens see the slot
            + (headDim / 2 + 1) * (1L + rows)                                // scores
            + 2L * (subgroups + 1) * (1 + rows)                              // max and sum over the subgroups' partials
            + 8L * rows                                                      // per-row bookkeeping
            + ((long)rows * headDim + local - 1) / local * (local + 1)       // V accumulation
            + 16;
        long chunks = Math.Max(1, AttentionIterationBudget / perChunk);
        return (int)Math.Min(chunks * local, 1 << 20);
    }

    /// <summary>Shared memory of attention.comp for <paramref name="rows"/> (token, head) rows; mirrors its shared arrays.</summary>
    private static long AttentionSharedBytes(int rows, int headDim, int local) => 4L * (2L * rows * headDim + 3L * rows * local + local + rows);

    /// <summary>64 threads (two NVIDIA warps, one AMD wave, eight lavapipe subgroups), fewer if the device allows fewer.</summary>
    private int AttentionWorkgroupSize() => Math.Min(64, Limits.MaxWorkgroupInvocations);

    /// <summary>The most query heads of one GQA group (a divisor of it, ≤ 8) whose shared memory fits the device.</summary>
    private int AttentionHeadsPerWorkgroup(int groupSize, int headDim, int local)
    {
        for (int heads = Math.Min(groupSize, AttentionMaxRows); heads >= 1; heads--)
            if (groupSize % heads == 0 && AttentionSharedBytes(heads, headDim, local) <= Limits.MaxSharedMemoryBytes) return heads;
        throw new ComputeException($"attention: head dimension {headDim} needs more shared memory than the device's {Limits.MaxSharedMemoryBytes} bytes");
    }
}
