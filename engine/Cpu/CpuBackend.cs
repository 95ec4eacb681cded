using System.Buffers;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The CPU backend: managed SIMD (System.Numerics.Tensors, Vector&lt;T&gt;) over the host's cores. Kernels run
/// when called; it is the default without a GPU and the reference the Vulkan backend is tested against.
/// Kernel bodies live in CpuBackend.&lt;Kernel&gt;.cs.
/// </summary>
public sealed partial class CpuBackend : ComputeBackend
{
    private readonly ParallelOptions _parallel;

    /// <param name="threads">Worker threads for kernels; 0 = all cores.</param>
    public CpuBackend(int threads = 0)
    {
        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = Threads };
        Info = new DeviceInfo("cpu", $"host CPU ({Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture})",
            DeviceKind.Cpu, DeviceType.Host, $".NET {Environment.Version}, Vector<float> = {System.Numerics.Vector<float>.Count} lanes",
            new DeviceLimits(SubgroupSize: 1, MaxStorageBufferRange: long.MaxValue, MinStorageBufferOffsetAlignment: 4,
                MaxSharedMemoryBytes: 0, MaxWorkgroupInvocations: 1, MaxWorkgroupCountX: int.MaxValue,
                DeviceMemoryBytes: GC.GetGCMemoryInfo().TotalAvailableMemoryBytes));
    }

    public int Threads { get; }

    internal ParallelOptions Parallelism => _parallel;

    /// <summary>
    /// Logit elements (rows × vocabulary) up to which sampling and verification run on the calling thread: a decode step
    /// of the default models (vocabulary 16) has a few hundred, where <c>Parallel.For</c>'s set-up costs microseconds
    /// and allocates; a real vocabulary (~150k) goes parallel from its first row.
    /// </summary>
    internal const long SerialRowElements = 1 << 16;

    /// <summary>
    /// Runs <paramref name="body"/>(row, scratch) for rows [0, <paramref name="count"/>) with a scratch array of
    /// <paramref name="scratchLength"/> floats: on the calling thread up to <see cref="SerialRowElements"/> logits
    /// (<paramref name="count"/> × <paramref name="rowElements"/>), else over the workers, a rented scratch per worker.
    /// </summary>
    internal void ForEachRow(int count, int rowElements, int scratchLength, Action<int, float[]> body)
    {
        if ((long)count * rowElements <= SerialRowElements)
        {
            float[] scratch = ArrayPool<float>.Shared.Rent(scratchLength);
            try { for (int r = 0; r < count; r++) body(r, scratch); }
            finally { ArrayPool<float>.Shared.Return(scratch); }
            return;
        }
        Parallel.For(0, count, _parallel,
            () => ArrayPool<float>.Shared.Rent(scratchLength),
            (r, _, scratch) =>
            {
                body(r, scratch);
                return scratch;
            },
            scratch => ArrayPool<float>.Shared.Return(scratch));
    }

    private CpuWorkers? _workers;

    /// <summary>
    /// The backend's pool of <see cref="Threads"/> spinning workers for fine-grained parallel regions (the managed
    /// dense layers of the models that run on this backend share it), created on first use.
    /// </summary>
    public CpuWorkers Workers => _workers ??= new CpuWorkers(Threads);

    public override DeviceInfo Info { get; }

    /// <summary>Host memory, and kernels free of shared state: callable from several threads at once.</summary>
    public override BackendCapabilities Capabilities { get; } = new(HostAddressable: true, ConcurrentKernels: true);

    public override DeviceBuffer<T> Allocate<T>(long length, string name) => new CpuBuffer<T>(length, name);

    public override void Flush() { }

    /// <summary>The host buffer behind <paramref name="buffer"/>; throws naming <paramref name="argument"/> if another backend owns it.</summary>
    internal static CpuBuffer<T> Host<T>(DeviceBuffer<T> buffer, string argument) where T : unmanaged =>
        buffer as CpuBuffer<T> ?? throw new ArgumentException($"{argument}: buffer '{buffer.Name}' belongs to another backend", argument);

    public override void Dispose() => _workers?.Dispose();
}
