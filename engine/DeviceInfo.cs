namespace RLHFSpec.Compute.Engine;

/// <summary>A compute device as found at start-up.</summary>
/// <param name="Id">The selector that opens it again: <c>cpu</c> or <c>vulkan:N</c>.</param>
/// <param name="Name">The device's own name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".</param>
/// <param name="Kind">Backend.</param>
/// <param name="Type">The type the device reports (VkPhysicalDeviceType), or host for the CPU backend.</param>
/// <param name="Driver">Driver name and version, or the runtime for the CPU backend.</param>
/// <param name="Limits">Limits read from the device.</param>
public sealed record DeviceInfo(string Id, string Name, DeviceKind Kind, DeviceType Type, string Driver, DeviceLimits Limits)
{
    /// <summary>The device offers VK_KHR_cooperative_matrix (matrix units: tensor cores, XMX, WMMA), read from its extension list.</summary>
    public bool CooperativeMatrix { get; init; }

    /// <summary>True for a hardware GPU (not lavapipe, not the host backend).</summary>
    public bool IsGpu => Kind == DeviceKind.Vulkan && Type is DeviceType.DiscreteGpu or DeviceType.IntegratedGpu or DeviceType.VirtualGpu;
}
