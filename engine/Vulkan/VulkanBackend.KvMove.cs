using System.Buffers;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec KvMoveShader = new("kv_move", Bindings: 9, PushConstantBytes: 20);

    /// <summary>Row-aligned windows a buffer may be bound as in one kv_move dispatch (the shader declares 4 per side).</summary>
    internal const int KvMoveMaxWindows = 4;

    /// <summary>Most words one invocation copies per pair and chunk: a workgroup streams CHUNK = local × this words of each row.</summary>
    private const int KvMoveWordsPerInvocation = 16;

    /// <summary>Workgroups an append aims for before it packs several rows into one workgroup.</summary>
    private const int KvMoveAppendSegments = 2048;

    [StructLayout(LayoutKind.Sequential)]
    private struct KvMovePush { public uint NumSegments, RowWords, PairsAt, PairsPerSegment, NumPairs; }

    protected override void AppendKvCore(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots)
    {
        var src = Own(source, nameof(source));
        var dst = Own(cache, nameof(cache));
        int rowWords = layout.RowWords, rowElements = layout.RowElements;
        int maxSlot = 0;
        foreach (int s in slots) maxSlot = Math.Max(maxSlot, s);

        // Binding holds a buffer reference, so it cannot live on the stack; a pooled array avoids a per-call allocation.
        Binding[] pooled = ArrayPool<Binding>.Shared.Rent(2 * KvMoveMaxWindows + 1);
        var bindings = pooled.AsSpan(0, 2 * KvMoveMaxWindows + 1);
        try
        {
            Span<uint> dstShifts = stackalloc uint[KvMoveMaxWindows];
            int dstWindows = BindWindows(dst, rowWords, maxSlot + 1L, BindingAccess.Write, bindings.Slice(KvMoveMaxWindows, KvMoveMaxWindows), dstShifts, nameof(cache), out long dstWindowRows);
            var mode = layout.DType == KvDType.F16 ? KvMoveMode.AppendF16 : KvMoveMode.AppendF32;
            var (local, chunk) = KvMoveGrid(rowWords);
            Span<int> constants = stackalloc int[] { local, (int)mode, 1, dstWindows, 0, chunk, 0 };

            // The source is bound whole per dispatch; a source larger than one binding is split by rows (slots are
            // distinct, so the pieces are independent).
            long sourceRowsPerDispatch = Math.Max(1, MaxBindingWords / rowElements);
            uint[] meta = ArrayPool<uint>.Shared.Rent(4 * (int)Math.Min(slots.Length, sourceRowsPerDispatch));
            try
            {
                for (int t0 = 0; t0 < slots.Length; t0 += (int)sourceRowsPerDispatch)
                {
                    int n = (int)Math.Min(sourceRowsPerDispatch, slots.Length - t0);
                    bindings[0] = src.Bind((long)t0 * rowElements, (long)n * rowElements, BindingAccess.Read, out uint srcShift);
                    for (int w = 1; w < KvMoveMaxWindows; w++) bindings[w] = bindings[0];
                    for (int i = 0; i < n; i++)
                    {
                        long slot = slots[t0 + i];
                        int w = (int)(slot / dstWindowRows);
                        meta[4 * i] = 0;
                        meta[4 * i + 1] = srcShift + (uint)(i * rowElements);
                        meta[4 * i + 2] = (uint)w;
                        meta[4 * i + 3] = dstShifts[w] + (uint)((slot - w * dstWindowRows) * rowWords);
                    }
                    bindings[2 * KvMoveMaxWindows] = Upload<uint>(meta.AsSpan(0, 4 * n));
                    // Appended rows are independent: a workgroup takes a run of them, enough runs to fill the device.
                    int perSegment = Math.Clamp(n / KvMoveAppendSegments, 1, 16);
                    int segments = (n + perSegment - 1) / perSegment;
                    var push = new KvMovePush { NumSegments = (uint)segments, RowWords = (uint)rowWords, PairsAt = 0, PairsPerSegment = (uint)perSegment, NumPairs = (uint)n };
                    DispatchKvMove(bindings, push, rowWords, chunk, segments, constants);
                }
            }
            finally { ArrayPool<uint>.Shared.Return(meta); }
        }
        finally { ArrayPool<Binding>.Shared.Return(pooled, clearArray: true); }
    }

    protected override void CopyKvCore(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords)
    {
        var src = Own(source, nameof(source));
        var dst = Own(destination, nameof(destination));
        bool same = ReferenceEquals(src, dst);
        // Between two buffers with every destination row distinct, order cannot matter: the transfer path
        // (vkCmdCopyBuffer, one region per run of consecutive rows) moves the rows at the device's copy rate.
        if (!same && TryCopyRowsByTransfer(src, dst, sourceRows, destinationRows, rowWords)) return;
        int maxSource = 0, maxDestination = 0;
        foreach (int r in sourceRows) maxSource = Math.Max(maxSource, r);
        foreach (int r in destinationRows) maxDestination = Math.Max(maxDestination, r);

        // Binding holds a buffer reference, so it cannot live on the stack; a pooled array avoids a per-call allocation.
        Binding[] pooled = ArrayPool<Binding>.Shared.Rent(2 * KvMoveMaxWindows + 1);
        var bindings = pooled.AsSpan(0, 2 * KvMoveMaxWindows + 1);
        try
        {
            Span<uint> srcShifts = stackalloc uint[KvMoveMaxWindows];
            Span<uint> dstShifts = stackalloc uint[KvMoveMaxWindows];
            var srcBindings = bindings[..KvMoveMaxWindows];
            var dstBindings = bindings.Slice(KvMoveMaxWindows, KvMoveMaxWindows);
            int srcWindows, dstWindows;
            long srcWindowRows, dstWindowRows;
            if (same)
            {
                // One set of windows for both sides: the shader reads and writes through the same bindings, so a
                // later pair's read of a row an earlier pair wrote is ordered within the invocation.
                dstWindows = BindWindows(dst, rowWords, Math.Max(maxSource, maxDestination) + 1L, BindingAccess.ReadWrite, dstBindings, dstShifts, nameof(destination), out dstWindowRows);
                dstBindings.CopyTo(srcBindings);
                dstShifts.CopyTo(srcShifts);
                srcWindows = dstWindows;
                srcWindowRows = dstWindowRows;
            }
            else
            {
                srcWindows = BindWindows(src, rowWords, maxSource + 1L, BindingAccess.Read, srcBindings, srcShifts, nameof(source), out srcWindowRows);
                dstWindows = BindWindows(dst, rowWords, maxDestination + 1L, BindingAccess.Write, dstBindings, dstShifts, nameof(destination), out dstWindowRows);
            }

            int segments = segmentOffsets.Length - 1, pairs = sourceRows.Length;
            int pairsAt = segments + 1;
            int metaLength = pairsAt + 4 * pairs;
            uint[] meta = ArrayPool<uint>.Shared.Rent(metaLength);
            try
            {
                for (int g = 0; g <= segments; g++) meta[g] = (uint)segmentOffsets[g];
                for (int p = 0; p < pairs; p++)
                {
                    int sw = (int)(sourceRows[p] / srcWindowRows), dw = (int)(destinationRows[p] / dstWindowRows);
                    int at = pairsAt + 4 * p;
                    meta[at] = (uint)sw;
                    meta[at + 1] = srcShifts[sw] + (uint)((sourceRows[p] - sw * srcWindowRows) * rowWords);
                    meta[at + 2] = (uint)dw;
                    meta[at + 3] = dstShifts[dw] + (uint)((destinationRows[p] - dw * dstWindowRows) * rowWords);
                }
                bindings[2 * KvMoveMaxWindows] = Upload<uint>(meta.AsSpan(0, metaLength));
            }
            finally { ArrayPool<uint>.Shared.Return(meta); }

            var (local, chunk) = KvMoveGrid(rowWords);
            bool wide = rowWords % 4 == 0 && chunk % 4 == 0;
            for (int w = 0; w < srcWindows; w++) wide &= srcShifts[w] % 4 == 0;
            for (int w = 0; w < dstWindows; w++) wide &= dstShifts[w] % 4 == 0;
            Span<int> constants = stackalloc int[] { local, (int)KvMoveMode.Copy, srcWindows, dstWindows, same ? 1 : 0, chunk, wide ? 1 : 0 };
            var push = new KvMovePush { NumSegments = (uint)segments, RowWords = (uint)rowWords, PairsAt = (uint)pairsAt, PairsPerSegment = 0, NumPairs = (uint)pairs };
            DispatchKvMove(bindings, push, rowWords, chunk, segments, constants);
        }
        finally { ArrayPool<Binding>.Shared.Return(pooled, clearArray: true); }
    }

    /// <summary>Distinct buffers and destination rows (validated): one transfer, a region per run of consecutive rows.</summary>
    protected override void CopyRowsCore(DeviceBuffer<float> source, DeviceBuffer<float> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, int rowElements) =>
        TryCopyRowsByTransfer(Own(source, nameof(source)), Own(destination, nameof(destination)), sourceRows, destinationRows, rowElements);

    private bool TryCopyRowsByTransfer<T>(VulkanBuffer<T> src, VulkanBuffer<T> dst, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, int rowElements) where T : unmanaged
    {
        int n = destinationRows.Length;
        int[] sorted = ArrayPool<int>.Shared.Rent(n);
        var regions = ArrayPool<Silk.NET.Vulkan.BufferCopy>.Shared.Rent(n);
        try
        {
            destinationRows.CopyTo(sorted);
            Array.Sort(sorted, 0, n);
            for (int i = 1; i < n; i++)
                if (sorted[i] == sorted[i - 1]) return false;
            ulong rowBytes = (ulong)rowElements * (ulong)System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
            int count = 0;
            for (int p = 0; p < n; p++)
            {
                ulong from = (ulong)sourceRows[p] * rowBytes, to = (ulong)destinationRows[p] * rowBytes;
                if (count > 0)
                {
                    ref var last = ref regions[count - 1];
                    if (last.SrcOffset + last.Size == from && last.DstOffset + last.Size == to) { last.Size += rowBytes; continue; }
                }
                regions[count++] = new Silk.NET.Vulkan.BufferCopy(from, to, rowBytes);
            }
            Device.CopyBufferRegions(src.Raw, dst.Raw, regions.AsSpan(0, count));
            return true;
        }
        finally
        {
            ArrayPool<int>.Shared.Return(sorted);
            ArrayPool<Silk.NET.Vulkan.BufferCopy>.Shared.Return(regions);
        }
    }

    /// <summary>Largest binding in words, leaving room for the element shift of an unaligned start.</summary>
    private long MaxBindingWords => KvMoveBindingWordsOverride ?? (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment) / sizeof(uint);

    /// <summary>Tests lower the binding size kv_move plans with (never above the device's) to exercise windows and
    /// split sources on small buffers; null = the device's maxStorageBufferRange.</summary>
    internal long? KvMoveBindingWordsOverride { get; set; }

    /// <summary>
    /// Workgroup size and chunk: about 16 words per invocation and pair (the per-pair work — reading its metadata —
    /// is then small next to the copying), between 32 and 256 invocations; rows beyond a chunk are split over
    /// several workgroups.
    /// </summary>
    private (int Local, int Chunk) KvMoveGrid(int rowWords)
    {
        int local = (int)Math.Min(256, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(32, rowWords / 16)));
        local = Math.Min(local, Limits.MaxWorkgroupInvocations);
        return (local, local * KvMoveWordsPerInvocation);
    }

    private void DispatchKvMove(ReadOnlySpan<Binding> bindings, in KvMovePush push, int rowWords, int chunk, int segments, ReadOnlySpan<int> constants)
    {
        // Both loops in the shader are grid-stride, so capping the grid changes only how work is spread.
        long chunks = ((long)rowWords + chunk - 1) / chunk;
        uint groupsX = (uint)Math.Min(chunks, Math.Min(Limits.MaxWorkgroupCountX, 65535));
        uint groupsY = (uint)Math.Min(segments, 65535);
        Dispatch(KvMoveShader, bindings, push, groupsX, groupsY, 1, constants);
    }

    /// <summary>
    /// Binds rows [0, rows) of <paramref name="buffer"/> as row-aligned windows, each within one binding's range;
    /// unused window slots repeat window 0. Returns the number of windows.
    /// </summary>
    private int BindWindows(VulkanBuffer<uint> buffer, int rowWords, long rows, BindingAccess access, Span<Binding> bindings, Span<uint> shifts, string argument, out long windowRows)
    {
        windowRows = MaxBindingWords / rowWords;
        if (windowRows == 0)
            throw new ArgumentException($"{argument}: a row of {rowWords} words exceeds the device's maxStorageBufferRange ({Limits.MaxStorageBufferRange} bytes)", argument);
        long windows = (rows + windowRows - 1) / windowRows;
        if (windows > KvMoveMaxWindows)
            throw new ArgumentException($"{argument}: buffer '{buffer.Name}' rows up to {rows} need {windows} bindings of maxStorageBufferRange ({Limits.MaxStorageBufferRange} bytes); kv_move supports at most {KvMoveMaxWindows}", argument);
        for (int w = 0; w < KvMoveMaxWindows; w++)
        {
            if (w < windows)
            {
                long first = w * windowRows;
                bindings[w] = buffer.Bind(first * rowWords, Math.Min(windowRows, rows - first) * rowWords, access, out shifts[w]);
            }
            else
            {
                bindings[w] = bindings[0];
                shifts[w] = shifts[0];
            }
        }
        return (int)windows;
    }
}
