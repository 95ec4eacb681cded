namespace RLHFSpec.Compute.Engine;

/// <summary>Which backend runs the kernels.</summary>
public enum DeviceKind
{
    /// <summary>Managed SIMD on the host's cores; the default without a GPU and the reference for Vulkan.</summary>
    Cpu,
    /// <summary>Vulkan compute: any vendor's GPU, or Mesa's lavapipe on the CPU.</summary>
    Vulkan,
}
