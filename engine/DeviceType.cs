namespace RLHFSpec.Compute.Engine;

/// <summary>
/// What a device is, as it reports itself: for Vulkan its <c>VkPhysicalDeviceType</c> (never inferred from the vendor
/// or the name); <see cref="Host"/> for the managed CPU backend.
/// </summary>
public enum DeviceType
{
    /// <summary>The managed CPU backend (not a Vulkan device).</summary>
    Host,
    /// <summary>VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU.</summary>
    DiscreteGpu,
    /// <summary>VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU.</summary>
    IntegratedGpu,
    /// <summary>VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU.</summary>
    VirtualGpu,
    /// <summary>VK_PHYSICAL_DEVICE_TYPE_CPU: a software driver on the host's cores (Mesa lavapipe, SwiftShader).</summary>
    Cpu,
    /// <summary>VK_PHYSICAL_DEVICE_TYPE_OTHER.</summary>
    Other,
}

/// <summary>Display names of <see cref="DeviceType"/> (as <c>devices</c> prints them).</summary>
public static class DeviceTypeNames
{
    public static string Name(this DeviceType type) => type switch
    {
        DeviceType.Host => "host",
        DeviceType.DiscreteGpu => "discrete-gpu",
        DeviceType.IntegratedGpu => "integrated-gpu",
        DeviceType.VirtualGpu => "virtual-gpu",
        DeviceType.Cpu => "cpu",
        _ => "other",
    };
}
