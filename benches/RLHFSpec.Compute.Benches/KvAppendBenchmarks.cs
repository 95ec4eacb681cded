using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// kv_move append: new fp32 K rows (8 KV heads × head dim 128, a Llama-8B layer) written to scattered slots of a
/// paged cache, stored fp32 or fp16. GB/s = rows read + rows written.
/// </summary>
public class KvAppendBenchmarks : IKernelBenchmark
{
    private const int NumKvHeads = 8, HeadDim = 128, BlockSize = 16, NumBlocks = 1024;

    private ComputeBackend _backend = null!;
    private DeviceBuffer<float> _source = null!;
    private DeviceBuffer<uint> _cache = null!;
    private KvLayout _layout;
    private int[] _slots = null!;

    public static IEnumerable<string> Backends() => BenchBackends.Available();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    public static IEnumerable<int> TokenCounts() => BenchGrid.Pick(new[] { 256, 4096 }, new[] { 1, 16, 256, 4096 });
    [ParamsSource(nameof(TokenCounts))] public int Tokens { get; set; } = 256;

    [Params(KvDType.F32, KvDType.F16)] public KvDType DType { get; set; } = KvDType.F16;

    public long BytesTouched(string method)
    {
        int rowElements = NumKvHeads * HeadDim;
        return (long)Tokens * rowElements * 4 + (long)Tokens * (DType == KvDType.F16 ? rowElements / 2 : rowElements) * 4;
    }

    [GlobalSetup]
    public void Setup()
    {
        _backend = BenchBackends.Get(Backend);
        _layout = new KvLayout(NumBlocks, BlockSize, NumKvHeads, HeadDim, DType);
        var random = new Random(31);
        // Whole blocks in shuffled order, as the block allocator hands them out.
        var blocks = Enumerable.Range(0, NumBlocks).OrderBy(_ => random.Next()).ToArray();
        _slots = Enumerable.Range(0, Tokens).Select(t => blocks[t / BlockSize] * BlockSize + t % BlockSize).ToArray();
        _source = _backend.Allocate<float>((long)Tokens * _layout.RowElements, "new keys");
        _source.Write(BenchData.Uniform((long)Tokens * _layout.RowElements, seed: 37));
        _cache = _backend.Allocate<uint>(_layout.TotalWords, "key cache");
        _backend.Flush();
    }

    [Benchmark]
    public void Append()
    {
        _backend.AppendKv(_source, _cache, _layout, _slots);
        _backend.Flush();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _source?.Dispose();
        _cache?.Dispose();
    }
}
