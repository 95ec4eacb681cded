using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>Below this many words a kv_move runs on the calling thread (a fork costs more than the copy).</summary>
    private const long KvMoveSerialWords = 1 << 16;

    /// <summary>Words of one row that one parallel work item copies (rows of whole blocks are split in chunks).</summary>
    private const int KvMoveChunkWords = 1 << 14;

    protected override unsafe void AppendKvCore(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots)
    {
        var src = Host(source, nameof(source));
        var dst = Host(cache, nameof(cache));
        if ((long)slots.Length * layout.RowWords <= KvMoveSerialWords)
        {
            for (int t = 0; t < slots.Length; t++) AppendRow(src.Pointer, dst.Pointer, layout, t, slots[t]);
            return;
        }
        int[] rented = ArrayPool<int>.Shared.Rent(slots.Length);
        try
        {
            slots.CopyTo(rented);
            Parallel.For(0, slots.Length, Parallelism, t => AppendRow(src.Pointer, dst.Pointer, layout, t, rented[t]));
        }
        finally { ArrayPool<int>.Shared.Return(rented); }
    }

    private static unsafe void AppendRow(float* source, uint* cache, KvLayout layout, int t, int slot)
    {
        int elements = layout.RowElements;
        var row = new ReadOnlySpan<float>(source + (long)t * elements, elements);
        uint* target = cache + (long)slot * layout.RowWords;
        if (layout.DType == KvDType.F32)
            row.CopyTo(new Span<float>(target, elements));
        else
            // Little-endian words: element 2w is the low half of word w. Same rounding as (Half)float.
            TensorPrimitives.ConvertToHalf(row, new Span<Half>(target, elements));
    }

    protected override void CopyRowsCore(DeviceBuffer<float> source, DeviceBuffer<float> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, int rowElements)
    {
        var src = Host(source, nameof(source));
        var dst = Host(destination, nameof(destination));
        for (int p = 0; p < sourceRows.Length; p++)
            src.AsSpan((long)sourceRows[p] * rowElements, rowElements).CopyTo(dst.AsSpan((long)destinationRows[p] * rowElements, rowElements));
    }

    protected override unsafe void CopyKvCore(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords)
    {
        var src = Host(source, nameof(source));
        var dst = Host(destination, nameof(destination));
        int segments = segmentOffsets.Length - 1;
        if ((long)sourceRows.Length * rowWords <= KvMoveSerialWords)
        {
            CopySegments(src.Pointer, dst.Pointer, sourceRows, destinationRows, segmentOffsets, rowWords, 0, rowWords);
            return;
        }
        // Work items are (segment, chunk of the row). A chunk copies the same words of every pair of its segment in
        // order, so a word written by one pair and read or overwritten by a later one is touched by one thread in
        // program order: in-order semantics within a segment without any synchronisation between chunks.
        int chunks = (rowWords + KvMoveChunkWords - 1) / KvMoveChunkWords;
        int pairs = sourceRows.Length;
        int[] rented = ArrayPool<int>.Shared.Rent(2 * pairs + segments + 1);
        try
        {
            sourceRows.CopyTo(rented);
            destinationRows.CopyTo(rented.AsSpan(pairs));
            segmentOffsets.CopyTo(rented.AsSpan(2 * pairs));
            Parallel.For(0, (long)segments * chunks, Parallelism, item =>
            {
                int g = (int)(item / chunks), c = (int)(item % chunks);
                int first = c * KvMoveChunkWords, count = Math.Min(KvMoveChunkWords, rowWords - first);
                var offsets = rented.AsSpan(2 * pairs + g, 2);
                CopySegments(src.Pointer, dst.Pointer, rented.AsSpan(0, pairs), rented.AsSpan(pairs, pairs), offsets, rowWords, first, count);
            });
        }
        finally { ArrayPool<int>.Shared.Return(rented); }
    }

    /// <summary>Words [first, first + count) of every pair of the segments in <paramref name="offsets"/>, pairs in order.</summary>
    private static unsafe void CopySegments(uint* source, uint* destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> offsets, int rowWords, int first, int count)
    {
        for (int p = offsets[0]; p < offsets[^1]; p++)
        {
            var from = new ReadOnlySpan<uint>(source + (long)sourceRows[p] * rowWords + first, count);
            // Rows are whole, so a pair's rows are either the same row (a no-op copy) or disjoint.
            from.CopyTo(new Span<uint>(destination + (long)destinationRows[p] * rowWords + first, count));
        }
    }
}
