using Silk.NET.Vulkan;
using VkBuffer = Silk.NET.Vulkan.Buffer;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>A VkBuffer with its own memory; mapped when the memory is host-visible.</summary>
internal sealed unsafe class VulkanBufferBase : IDisposable
{
    private readonly VulkanDevice _device;

    public VulkanBufferBase(VulkanDevice device, long sizeBytes, bool preferHostVisible, string name)
    {
        _device = device;
        Name = name;
        SizeBytes = sizeBytes;
        (Handle, Memory, var mapped, IsHostVisible) = device.CreateBuffer(Math.Max(sizeBytes, 4), preferHostVisible, name);
        Mapped = (byte*)mapped;
    }

    public string Name { get; }
    public long SizeBytes { get; }
    public VkBuffer Handle { get; }
    public DeviceMemory Memory { get; }
    /// <summary>Host address of the buffer, or null when its memory is not host-visible.</summary>
    public byte* Mapped { get; }
    public bool IsHostVisible { get; }
    public bool Disposed { get; private set; }

    public void Dispose()
    {
        if (Disposed) return;
        Disposed = true;
        _device.DestroyBuffer(Handle, Memory, Mapped != null);
    }
}
