using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// The yardstick: copy bandwidth of each backend, measured in the same run as the kernels. CPU: a multi-threaded
/// memcpy of a large buffer; Vulkan: the copy shader and (engine "vulkan-transfer") vkCmdCopyBuffer.
/// </summary>
public class CopyBenchmarks : IKernelBenchmark
{
    private ComputeBackend _backend = null!;
    private DeviceBuffer<uint> _source = null!, _destination = null!;

    public static IEnumerable<string> Engines()
    {
        foreach (var b in BenchBackends.Available())
        {
            yield return b;
            if (b == "vulkan") yield return "vulkan-transfer";
        }
    }

    [ParamsSource(nameof(Engines))] public string Engine { get; set; } = "cpu";

    public static IEnumerable<int> Sizes() => BenchGrid.Pick(new[] { 64 }, new[] { 16, 64, 256 });
    [ParamsSource(nameof(Sizes))] public int SizeMiB { get; set; } = 64;

    public string Backend => Engine.StartsWith("vulkan", StringComparison.Ordinal) ? "vulkan" : "cpu";
    private long Words => (long)SizeMiB << 18;
    public long BytesTouched(string method) => 2 * Words * 4;

    [GlobalSetup]
    public void Setup()
    {
        _backend = BenchBackends.Get(Backend);
        _source = _backend.Allocate<uint>(Words, "copy source");
        _destination = _backend.Allocate<uint>(Words, "copy destination");
        var fill = new uint[Words];
        new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(fill.AsSpan()));
        _source.Write(fill);
        _destination.Write(fill); // touch every page before timing
        _backend.Flush();
    }

    [Benchmark]
    public unsafe void Copy()
    {
        if (_backend is VulkanBackend vulkan)
        {
            vulkan.CopyWords(_source, 0, _destination, 0, Words, useTransfer: Engine == "vulkan-transfer");
            vulkan.Flush();
            return;
        }
        var src = (CpuBuffer<uint>)_source;
        var dst = (CpuBuffer<uint>)_destination;
        int threads = ((CpuBackend)_backend).Threads;
        long chunk = (Words + threads - 1) / threads;
        Parallel.For(0, threads, t =>
        {
            long start = t * chunk, n = Math.Min(chunk, Words - start);
            if (n > 0) Buffer.MemoryCopy(src.Pointer + start, dst.Pointer + start, n * 4, n * 4);
        });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _source.Dispose();
        _destination.Dispose();
    }
}
