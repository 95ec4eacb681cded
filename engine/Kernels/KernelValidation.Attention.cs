namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    internal static void Attention(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output)
    {
        // TODO(attention helper): full checks.
    }
}
