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
    /// of the default models (vocabulary 16) has a few hundred, where waking the workers costs more than the work; a
    /// real vocabulary (~150k) goes parallel from its first row.
    /// </summary>
    internal const long SerialRowElements = 1 << 16;

    /// <summary>
    /// Runs <paramref name="body"/> for items [0, <paramref name="count"/>) (rows or samples, each walking rows of
    /// <paramref name="rowLength"/> logits) on <see cref="CpuRowTeam"/>s with <paramref name="scratchRows"/> scratch rows:
    /// on the calling thread up to <see cref="SerialRowElements"/> logits; with at least two items per worker, a team of
    /// one per worker taking items in turn; else one team of all the workers that takes the items one after another
    /// and splits each row. Teams compute the same bits whatever their size, so the split never changes a result.
    /// </summary>
    internal void ForEachItem(int count, int rowLength, int scratchRows, CpuRowWork.Body body)
    {
        if (count == 0) return;
        var teams = RentTeams(rowLength, scratchRows);
        try
        {
            if ((long)count * rowLength <= SerialRowElements || Threads == 1)
            {
                var member = teams.Solo(0)[0];
                for (int i = 0; i < count; i++) body(ref member, i);
                return;
            }
            Workers.Run(new CpuRowWork(Workers, teams, count, splitRows: count < 2 * Threads, body));
        }
        finally
        {
            ReturnTeams(teams);
        }
    }

    /// <summary>The teams of the last row-kernel call, while no call holds them (calls may come from several threads at once).</summary>
    private CpuRowTeamCache? _spareTeams;

    /// <summary>The spare teams if they fit the call, else new ones (the spare ones are dropped: the next call is likely alike).</summary>
    private CpuRowTeamCache RentTeams(int rowLength, int scratchRows)
    {
        var teams = Interlocked.Exchange(ref _spareTeams, null);
        if (teams != null && teams.Fits(rowLength, scratchRows)) return teams;
        teams?.Dispose();
        return new CpuRowTeamCache(Threads, Math.Max(rowLength, teams?.RowLength ?? 0), Math.Max(scratchRows, teams?.ScratchRows ?? 0));
    }

    private void ReturnTeams(CpuRowTeamCache teams) => Interlocked.Exchange(ref _spareTeams, teams)?.Dispose();

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

    public override void Dispose()
    {
        Interlocked.Exchange(ref _spareTeams, null)?.Dispose();
        _workers?.Dispose();
    }
}
