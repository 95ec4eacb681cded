namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    internal static void AppendKv(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots)
    {
        // TODO(kv_move helper): full checks.
    }

    internal static void CopyKv(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords)
    {
        // TODO(kv_move helper): full checks.
    }
}
