namespace RLHFSpec.Compute.Engine;

/// <summary>
/// A typed array owned by a backend. On the CPU backend it is host memory; on Vulkan a buffer
/// (host-visible when the device allows it). <see cref="Write"/> and <see cref="Read"/> wait for
/// recorded work first, so callers never observe a half-run kernel.
/// </summary>
public abstract class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    protected DeviceBuffer(long length, string name)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, $"buffer '{name}': length must be >= 0");
        Length = length;
        Name = name;
    }

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>Name used in error messages.</summary>
    public string Name { get; }

    public long SizeBytes => Length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();

    /// <summary>Copies <paramref name="source"/> into elements [offset, offset + source.Length).</summary>
    public abstract void Write(ReadOnlySpan<T> source, long offset = 0);

    /// <summary>Copies elements [offset, offset + destination.Length) into <paramref name="destination"/>.</summary>
    public abstract void Read(Span<T> destination, long offset = 0);

    /// <summary>Sets every element to zero.</summary>
    public abstract void Clear();

    /// <summary>
    /// Elements [offset, offset + count) in place, for a buffer of a backend whose <see cref="BackendCapabilities.HostAddressable"/>
    /// is true; other buffers throw <see cref="NotSupportedException"/>.
    /// </summary>
    public virtual Span<T> HostSpan(long offset, int count) =>
        throw new NotSupportedException($"buffer '{Name}': its backend's buffers are not host-addressable; use Read and Write");

    public T[] ToArray()
    {
        var result = new T[checked((int)Length)];
        Read(result);
        return result;
    }

    protected void CheckRange(long offset, int count, string argument)
    {
        if (offset < 0 || count < 0 || offset + count > Length)
            throw new ArgumentOutOfRangeException(argument,
                $"buffer '{Name}': range [{offset}, {offset + count}) is outside its {Length} elements");
    }

    public abstract void Dispose();
}
