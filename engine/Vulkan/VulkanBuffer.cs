using System.Runtime.CompilerServices;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// A typed Vulkan buffer. Reads and writes go through the mapping when the memory is host-visible (lavapipe,
/// unified memory, ReBAR), else through a staging copy. Either way recorded work is finished first.
/// </summary>
public sealed unsafe class VulkanBuffer<T> : DeviceBuffer<T> where T : unmanaged
{
    private readonly VulkanBackend _backend;

    internal VulkanBuffer(VulkanBackend backend, long length, string name, bool preferHostVisible = false) : base(length, name)
    {
        _backend = backend;
        Raw = new VulkanBufferBase(backend.Device, SizeBytes, preferHostVisible, name);
    }

    internal VulkanBufferBase Raw { get; }

    internal VulkanBackend Backend => _backend;

    /// <summary>True when the host can address the buffer directly.</summary>
    public bool IsHostVisible => Raw.IsHostVisible;

    /// <summary>Elements [first, first + count) as a binding, honouring the device's offset alignment and range limit.
    /// The shader must add <paramref name="elementShift"/> to its indices (the binding starts that many elements early).</summary>
    internal Binding Bind(long first, long count, BindingAccess access, out uint elementShift)
    {
        long elementBytes = Unsafe.SizeOf<T>();
        long startBytes = first * elementBytes;
        long align = _backend.Device.Limits.MinStorageBufferOffsetAlignment;
        long offset = startBytes / align * align;
        elementShift = (uint)((startBytes - offset) / elementBytes);
        long range = startBytes - offset + count * elementBytes;
        return new Binding(Raw, offset, Math.Max(range, 4), access);
    }

    public override void Write(ReadOnlySpan<T> source, long offset = 0)
    {
        CheckRange(offset, source.Length, nameof(offset));
        if (source.Length == 0) return;
        lock (_backend.Device.Sync) WriteLocked(source, offset);
    }

    private void WriteLocked(ReadOnlySpan<T> source, long offset)
    {
        _backend.Device.Flush();
        long bytes = (long)source.Length * Unsafe.SizeOf<T>();
        long at = offset * Unsafe.SizeOf<T>();
        if (Raw.IsHostVisible)
        {
            fixed (T* s = source) System.Buffer.MemoryCopy(s, Raw.Mapped + at, SizeBytes - at, bytes);
            return;
        }
        using var staging = new VulkanBufferBase(_backend.Device, bytes, preferHostVisible: true, Name + ".staging");
        fixed (T* s = source) System.Buffer.MemoryCopy(s, staging.Mapped, bytes, bytes);
        _backend.Device.CopyBuffer(staging, 0, Raw, at, bytes);
        _backend.Device.Flush();
    }

    public override void Read(Span<T> destination, long offset = 0)
    {
        CheckRange(offset, destination.Length, nameof(offset));
        if (destination.Length == 0) return;
        lock (_backend.Device.Sync) ReadLocked(destination, offset);
    }

    private void ReadLocked(Span<T> destination, long offset)
    {
        _backend.Device.Flush();
        long bytes = (long)destination.Length * Unsafe.SizeOf<T>();
        long at = offset * Unsafe.SizeOf<T>();
        _backend.Device.BytesRead += bytes;
        if (Raw.IsHostVisible)
        {
            fixed (T* d = destination) System.Buffer.MemoryCopy(Raw.Mapped + at, d, bytes, bytes);
            return;
        }
        using var staging = new VulkanBufferBase(_backend.Device, bytes, preferHostVisible: true, Name + ".staging");
        _backend.Device.CopyBuffer(Raw, at, staging, 0, bytes);
        _backend.Device.Flush();
        fixed (T* d = destination) System.Buffer.MemoryCopy(staging.Mapped, d, bytes, bytes);
    }

    public override void Clear() => _backend.Device.ClearBuffer(Raw);

    public override void Dispose() => Raw.Dispose();
}
