using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    protected override void AttentionCore(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output) =>
        throw new NotImplementedException("attention (Vulkan)");
}
