namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>A byte range of a buffer bound to one storage-buffer slot of a dispatch, with its access.</summary>
internal readonly record struct Binding(VulkanBufferBase Buffer, long Offset, long Range, BindingAccess Access)
{
    public static Binding Read(VulkanBufferBase buffer) => new(buffer, 0, buffer.SizeBytes, BindingAccess.Read);
    public static Binding Write(VulkanBufferBase buffer) => new(buffer, 0, buffer.SizeBytes, BindingAccess.Write);
    public static Binding ReadWrite(VulkanBufferBase buffer) => new(buffer, 0, buffer.SizeBytes, BindingAccess.ReadWrite);
}
