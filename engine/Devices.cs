using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Engine;

/// <summary>
/// Finds compute devices and opens one from a selector: <c>auto</c> (a real GPU through Vulkan if one is present,
/// else the CPU backend), <c>cpu</c>, <c>vulkan</c> (the best Vulkan device: a GPU, else lavapipe) or
/// <c>vulkan:N</c>.
/// </summary>
public static class Devices
{
    /// <summary>The CPU backend and every Vulkan device; <paramref name="vulkanError"/> says why Vulkan found none.</summary>
    public static IReadOnlyList<DeviceInfo> List(out string? vulkanError)
    {
        var found = new List<DeviceInfo> { new CpuBackend().Info };
        found.AddRange(ListVulkan(out vulkanError));
        return found;
    }

    public static IReadOnlyList<DeviceInfo> ListVulkan(out string? error)
    {
        error = null;
        try
        {
            var (vk, instance) = VulkanInstance.Create();
            try
            {
                var physical = VulkanInstance.PhysicalDevices(vk, instance);
                if (physical.Length == 0) error = $"the Vulkan loader found no device: {VulkanInstance.MissingDriverHint}";
                return physical.Select((p, i) => VulkanDevice.Describe(vk, p, i, out _)).ToList();
            }
            finally { unsafe { vk.DestroyInstance(instance, null); } }
        }
        catch (ComputeException e)
        {
            error = e.Message;
            return Array.Empty<DeviceInfo>();
        }
    }

    /// <summary>Opens the device named by <paramref name="selector"/>; <c>auto</c> never fails for want of Vulkan.</summary>
    /// <param name="cpuThreads">Threads for the CPU backend; 0 = all cores.</param>
    public static ComputeBackend Open(string selector, int cpuThreads = 0)
    {
        var s = selector.Trim().ToLowerInvariant();
        if (s == "cpu") return new CpuBackend(cpuThreads);
        if (s == "auto")
        {
            var gpus = ListVulkan(out _);
            int gpu = gpus.ToList().FindIndex(d => d.IsGpu);
            return gpu >= 0 ? OpenVulkan(gpu) : new CpuBackend(cpuThreads);
        }
        if (s == "vulkan")
        {
            var all = ListVulkan(out var error);
            if (all.Count == 0) throw new ComputeException(error ?? $"no Vulkan device: {VulkanInstance.MissingDriverHint}");
            int gpu = all.ToList().FindIndex(d => d.IsGpu);
            return OpenVulkan(gpu >= 0 ? gpu : 0);
        }
        if (s.StartsWith("vulkan:", StringComparison.Ordinal) && int.TryParse(s["vulkan:".Length..], out int index) && index >= 0)
            return OpenVulkan(index);
        throw new ArgumentException($"device '{selector}': expected auto, cpu, vulkan or vulkan:N", nameof(selector));
    }

    /// <summary>
    /// The device of generation instance <paramref name="instance"/> of a cluster: with <c>auto</c> or <c>vulkan</c> on a
    /// machine with several GPUs, instance k gets GPU k mod (number of GPUs) — one instance per GPU; otherwise (one GPU,
    /// no GPU, <c>cpu</c>, or an explicit <c>vulkan:N</c>) what <see cref="Open"/> gives, a backend of its own each time.
    /// </summary>
    public static ComputeBackend OpenForInstance(string selector, int instance, int cpuThreads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(instance);
        var s = selector.Trim().ToLowerInvariant();
        if (s is "auto" or "vulkan" && GpuForInstance(ListVulkan(out _), instance) is { } gpu) return OpenVulkan(gpu);
        return Open(selector, cpuThreads);
    }

    /// <summary>
    /// The Vulkan device index (in <paramref name="vulkanDevices"/>) of instance <paramref name="instance"/> when there
    /// are several GPUs (round robin over them), else null.
    /// </summary>
    public static int? GpuForInstance(IReadOnlyList<DeviceInfo> vulkanDevices, int instance)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(instance);
        var gpus = vulkanDevices.Select((d, i) => (d, i)).Where(x => x.d.IsGpu).Select(x => x.i).ToArray();
        return gpus.Length > 1 ? gpus[instance % gpus.Length] : null;
    }

    /// <summary>Opens Vulkan device <paramref name="index"/> (as numbered by <see cref="ListVulkan"/>).</summary>
    public static VulkanBackend OpenVulkan(int index)
    {
        var (vk, instance) = VulkanInstance.Create();
        try
        {
            var physical = VulkanInstance.PhysicalDevices(vk, instance);
            if (index >= physical.Length)
                throw new ComputeException(physical.Length == 0
                    ? $"no Vulkan device: {VulkanInstance.MissingDriverHint}"
                    : $"device 'vulkan:{index}' does not exist: {physical.Length} Vulkan device(s) found (vulkan:0..vulkan:{physical.Length - 1})");
            return new VulkanBackend(new VulkanDevice(vk, instance, physical[index], index));
        }
        catch
        {
            unsafe { vk.DestroyInstance(instance, null); }
            throw;
        }
    }
}
