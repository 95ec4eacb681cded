using System.Runtime.InteropServices;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>Host memory, 64-byte aligned, zeroed; other host code (ONNX Runtime tensors) can wrap it without copies.</summary>
public sealed unsafe class CpuBuffer<T> : DeviceBuffer<T> where T : unmanaged
{
    private T* _data;

    internal CpuBuffer(long length, string name) : base(length, name)
    {
        nuint bytes = (nuint)Math.Max(SizeBytes, 1);
        _data = (T*)NativeMemory.AlignedAlloc(bytes, 64);
        NativeMemory.Clear(_data, bytes);
    }

    /// <summary>The first element. Valid until <see cref="Dispose"/>.</summary>
    public T* Pointer => _data != null ? _data : throw new ObjectDisposedException(Name);

    /// <summary>Elements [offset, offset + count) as a span.</summary>
    public Span<T> AsSpan(long offset, int count)
    {
        CheckRange(offset, count, nameof(offset));
        return new Span<T>(Pointer + offset, count);
    }

    public override Span<T> HostSpan(long offset, int count) => AsSpan(offset, count);

    /// <summary>The whole buffer as a span (it must hold fewer than 2^31 elements).</summary>
    public Span<T> AsSpan() => AsSpan(0, checked((int)Length));

    public override void Write(ReadOnlySpan<T> source, long offset = 0) => source.CopyTo(AsSpan(offset, source.Length));

    public override void Read(Span<T> destination, long offset = 0) => AsSpan(offset, destination.Length).CopyTo(destination);

    public override void Clear() => NativeMemory.Clear(Pointer, (nuint)SizeBytes);

    public override void Dispose()
    {
        if (_data != null) { NativeMemory.AlignedFree(_data); _data = null; }
    }
}
