using System.Runtime.CompilerServices;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// The Vulkan backend: every kernel is a compute shader in <c>shaders/</c>. Kernel bodies live in
/// VulkanBackend.&lt;Kernel&gt;.cs; they record through <see cref="Dispatch{TPush}"/>, put small host inputs
/// in the per-submit upload arena (<see cref="Upload{T}"/>) and keep reusable work buffers by name
/// (<see cref="Scratch{T}"/>).
/// </summary>
public sealed partial class VulkanBackend : ComputeBackend
{
    private const long ArenaChunkBytes = 4 << 20;

    private readonly List<VulkanBufferBase> _arena = new();
    private int _arenaChunk;
    private long _arenaUsed;
    private readonly Dictionary<string, IDisposable> _scratch = new();

    internal VulkanBackend(VulkanDevice device)
    {
        Device = device;
        Device.AfterFlush += () => { _arenaChunk = 0; _arenaUsed = 0; };
    }

    internal VulkanDevice Device { get; }

    public override DeviceInfo Info => Device.Info;

    /// <summary>
    /// Buffers are reached through recorded copies (even when mapped), and the device serialises every operation
    /// (<see cref="VulkanDevice.Sync"/>): safe from several threads, but one at a time.
    /// </summary>
    public override BackendCapabilities Capabilities { get; } = new(HostAddressable: false, ConcurrentKernels: false);

    internal DeviceLimits Limits => Device.Limits;

    /// <summary>Submits so far; a test can check that work was batched.</summary>
    public long Submits => Device.Submits;

    /// <summary>Dispatches recorded so far.</summary>
    public long Dispatches => Device.Dispatches;

    /// <summary>Bytes buffer reads have copied to the host so far; a test can check that a step reads back only small results.</summary>
    public long BytesRead => Device.BytesRead;

    /// <summary>Barriers recorded so far.</summary>
    public long Barriers => Device.Barriers;

    public override DeviceBuffer<T> Allocate<T>(long length, string name) => new VulkanBuffer<T>(this, length, name);

    public override void Flush() => Device.Flush();

    /// <summary>The Vulkan buffer behind <paramref name="buffer"/>; throws naming <paramref name="argument"/> if another backend owns it.</summary>
    internal VulkanBuffer<T> Own<T>(DeviceBuffer<T> buffer, string argument) where T : unmanaged =>
        buffer is VulkanBuffer<T> v && ReferenceEquals(v.Backend, this)
            ? v
            : throw new ArgumentException($"{argument}: buffer '{buffer.Name}' belongs to another backend", argument);

    /// <summary>Ceil-divided grid: workgroups needed to cover <paramref name="threads"/> with groups of <paramref name="local"/>.</summary>
    internal static uint Groups(long threads, int local) => (uint)((threads + local - 1) / local);

    internal void Dispatch<TPush>(ShaderSpec shader, ReadOnlySpan<Binding> bindings, in TPush push, uint groupsX, uint groupsY = 1, uint groupsZ = 1, ReadOnlySpan<int> constants = default)
        where TPush : unmanaged =>
        Device.Dispatch(shader, bindings, push, groupsX, groupsY, groupsZ, constants);

    /// <summary>
    /// Copies small host data (metadata: offsets, tokens, parameters) into the upload arena and returns a read-only
    /// binding valid until the next submit. Never flushes, so a kernel may upload while it records.
    /// </summary>
    internal unsafe Binding Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        long bytes = Math.Max(4, (long)data.Length * Unsafe.SizeOf<T>());
        long align = Limits.MinStorageBufferOffsetAlignment;
        while (true)
        {
            if (_arenaChunk == _arena.Count)
            {
                long size = Math.Max(ArenaChunkBytes, bytes);
                _arena.Add(new VulkanBufferBase(Device, size, preferHostVisible: true, $"upload-arena-{_arena.Count}"));
            }
            var chunk = _arena[_arenaChunk];
            long at = (_arenaUsed + align - 1) / align * align;
            if (at + bytes <= chunk.SizeBytes)
            {
                fixed (T* s = data) System.Buffer.MemoryCopy(s, chunk.Mapped + at, bytes, (long)data.Length * Unsafe.SizeOf<T>());
                _arenaUsed = at + bytes;
                return new Binding(chunk, at, bytes, BindingAccess.Read);
            }
            if (bytes > chunk.SizeBytes && _arenaUsed == 0)
            {
                // A chunk too small for this upload: replace it with one that fits.
                _arena[_arenaChunk] = new VulkanBufferBase(Device, bytes, preferHostVisible: true, $"upload-arena-{_arenaChunk}");
                chunk.Dispose();
                continue;
            }
            _arenaChunk++;
            _arenaUsed = 0;
        }
    }

    /// <summary>
    /// A work buffer kept under <paramref name="key"/> and reused across calls, grown (never shrunk) to hold
    /// <paramref name="length"/> elements; host-visible where the device allows, so results can be read back.
    /// </summary>
    internal VulkanBuffer<T> Scratch<T>(string key, long length) where T : unmanaged
    {
        if (_scratch.TryGetValue(key, out var existing))
        {
            if (existing is VulkanBuffer<T> typed && typed.Length >= length) return typed;
            existing.Dispose();
        }
        var created = new VulkanBuffer<T>(this, Math.Max(length, 1), "scratch:" + key, preferHostVisible: true);
        _scratch[key] = created;
        return created;
    }

    public override void Dispose()
    {
        Device.Flush();
        foreach (var s in _scratch.Values) s.Dispose();
        foreach (var a in _arena) a.Dispose();
        Device.Dispose();
    }
}
