using System.Buffers;

namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    /// <summary>
    /// AppendKv checks. Appended K/V values are activations and are not scanned for NaN/Inf (that would cost a
    /// pass over every row of every layer); they are stored as given (fp16: Inf stays Inf, values beyond
    /// ±65504 round to ±Inf, NaN stays a NaN whose payload is unspecified).
    /// </summary>
    internal static void AppendKv(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(cache);
        RequireLayout(layout, nameof(layout));
        RequireAtLeast(cache, layout.TotalWords, nameof(cache));
        RequireAtLeast(source, (long)slots.Length * layout.RowElements, nameof(source));
        RequireRange(slots, 0, layout.NumSlots, nameof(slots));
        RequireDistinct(slots, nameof(slots));
    }

    /// <summary>CopyRows checks: two distinct buffers, rows in range, destination rows distinct.</summary>
    internal static void CopyRows(DeviceBuffer<float> source, DeviceBuffer<float> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, int rowElements)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(destination);
        Require(!ReferenceEquals(source, destination), nameof(destination), "must be another buffer than the source");
        if (rowElements <= 0) throw new ArgumentOutOfRangeException(nameof(rowElements), rowElements, "rowElements must be positive");
        RequireLength(destinationRows, sourceRows.Length, nameof(destinationRows));
        RequireRange(sourceRows, 0, source.Length / rowElements, nameof(sourceRows));
        RequireRange(destinationRows, 0, destination.Length / rowElements, nameof(destinationRows));
        RequireDistinct(destinationRows, nameof(destinationRows));
    }

    /// <summary>
    /// CopyKv checks. Besides lengths and ranges, segments must be independent (they run in parallel): no row that
    /// one segment writes may be written, or — when source and destination are the same buffer — read, by another.
    /// </summary>
    internal static void CopyKv(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(destination);
        if (rowWords <= 0) throw new ArgumentOutOfRangeException(nameof(rowWords), rowWords, "rowWords must be positive");
        RequireLength(destinationRows, sourceRows.Length, nameof(destinationRows));
        int pairs = sourceRows.Length;
        if (!(pairs == 0 && segmentOffsets.IsEmpty))
        {
            Require(segmentOffsets.Length >= 1, nameof(segmentOffsets), "needs at least one entry (0)");
            RequireOffsets(segmentOffsets, segmentOffsets.Length - 1, nameof(segmentOffsets));
            Require(segmentOffsets[^1] == pairs, nameof(segmentOffsets), $"last offset {segmentOffsets[^1]} must equal the number of pairs {pairs}");
        }
        RequireRange(sourceRows, 0, source.Length / rowWords, nameof(sourceRows));
        RequireRange(destinationRows, 0, destination.Length / rowWords, nameof(destinationRows));
        if (segmentOffsets.Length > 2) RequireIndependentSegments(sourceRows, destinationRows, segmentOffsets, ReferenceEquals(source, destination));
    }

    private static void RequireLayout(KvLayout layout, string argument)
    {
        Require(Enum.IsDefined(layout.DType), argument, $"unknown dtype {layout.DType}");
        try { layout.Validate(); }
        catch (ArgumentException e) { throw new ArgumentException($"{argument}: {e.Message}", argument, e); }
    }

    private static void RequireDistinct(ReadOnlySpan<int> values, string argument)
    {
        if (values.Length < 2) return;
        int[] sorted = ArrayPool<int>.Shared.Rent(values.Length);
        try
        {
            var s = sorted.AsSpan(0, values.Length);
            values.CopyTo(s);
            s.Sort();
            for (int i = 1; i < s.Length; i++)
                if (s[i] == s[i - 1])
                    throw new ArgumentException($"{argument}: value {s[i]} appears more than once (rows would race)", argument);
        }
        finally { ArrayPool<int>.Shared.Return(sorted); }
    }

    /// <summary>Sorted (row, segment) keys of every write; a clash across segments is a race.</summary>
    private static void RequireIndependentSegments(ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, bool sameBuffer)
    {
        int pairs = destinationRows.Length;
        long[] keys = ArrayPool<long>.Shared.Rent(pairs);
        try
        {
            var writes = keys.AsSpan(0, pairs);
            for (int g = 0; g + 1 < segmentOffsets.Length; g++)
                for (int p = segmentOffsets[g]; p < segmentOffsets[g + 1]; p++)
                    writes[p] = ((long)destinationRows[p] << 32) | (uint)g;
            writes.Sort();
            for (int i = 1; i < pairs; i++)
                if (writes[i] >> 32 == writes[i - 1] >> 32 && (int)writes[i] != (int)writes[i - 1])
                    throw new ArgumentException($"destinationRows: row {writes[i] >> 32} is written by segments {(int)writes[i - 1]} and {(int)writes[i]}, which run in parallel", nameof(destinationRows));
            if (!sameBuffer) return;
            for (int g = 0; g + 1 < segmentOffsets.Length; g++)
                for (int p = segmentOffsets[g]; p < segmentOffsets[g + 1]; p++)
                {
                    // Any write of this row by another segment? Writes of a row are contiguous in the sorted keys.
                    int at = writes.BinarySearch((long)sourceRows[p] << 32);
                    if (at < 0) at = ~at;
                    for (; at < pairs && writes[at] >> 32 == sourceRows[p]; at++)
                        if ((int)writes[at] != g)
                            throw new ArgumentException($"sourceRows: row {sourceRows[p]} is read by segment {g} and written by segment {(int)writes[at]}, which run in parallel", nameof(sourceRows));
                }
        }
        finally { ArrayPool<long>.Shared.Return(keys); }
    }
}
