using Silk.NET.Core.Native;
using Silk.NET.Vulkan;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>Loads the Vulkan loader and creates an instance; a missing loader or driver becomes one clear message.</summary>
internal static unsafe class VulkanInstance
{
    public const string MissingDriverHint = "install a Vulkan driver (Debian: apt-get install mesa-vulkan-drivers libvulkan1)";

    public static (Vk Vk, Instance Instance) Create()
    {
        Vk vk;
        try { vk = Vk.GetApi(); }
        catch (Exception e) when (e is DllNotFoundException or FileNotFoundException or InvalidOperationException or PlatformNotSupportedException)
        {
            throw new ComputeException($"no Vulkan loader found (libvulkan): {MissingDriverHint}", e);
        }
        var appName = (byte*)SilkMarshal.StringToPtr("RLHFSpec.Compute");
        try
        {
            var app = new ApplicationInfo
            {
                SType = StructureType.ApplicationInfo,
                PApplicationName = appName,
                PEngineName = appName,
                ApiVersion = Vk.Version12,
            };
            var info = new InstanceCreateInfo { SType = StructureType.InstanceCreateInfo, PApplicationInfo = &app };
            var result = vk.CreateInstance(&info, null, out var instance);
            if (result == Result.ErrorIncompatibleDriver)
                throw new ComputeException($"no Vulkan driver found: {MissingDriverHint}");
            result.Check("vkCreateInstance");
            return (vk, instance);
        }
        finally { SilkMarshal.Free((nint)appName); }
    }

    public static PhysicalDevice[] PhysicalDevices(Vk vk, Instance instance)
    {
        uint count = 0;
        vk.EnumeratePhysicalDevices(instance, &count, null).Check("vkEnumeratePhysicalDevices");
        var devices = new PhysicalDevice[count];
        fixed (PhysicalDevice* p = devices) vk.EnumeratePhysicalDevices(instance, &count, p).Check("vkEnumeratePhysicalDevices");
        return devices;
    }
}
