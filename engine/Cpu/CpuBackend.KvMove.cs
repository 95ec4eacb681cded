using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    protected override void AppendKvCore(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots) =>
        throw new NotImplementedException("kv_move append (CPU)");

    protected override void CopyKvCore(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords) =>
        throw new NotImplementedException("kv_move copy (CPU)");
}
