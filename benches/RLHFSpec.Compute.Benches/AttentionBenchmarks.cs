using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// Paged attention for one layer of a Qwen2-0.5B-shaped model (14 query heads, 2 KV heads, head dim 64, blocks of
/// 16 slots, physical blocks shuffled): decode (one new token per sample, causal) and tree verification (a
/// 16-node binary draft tree per sample, tree mask). GB/s counts each sample's K and V once plus queries and outputs.
/// </summary>
public class AttentionBenchmarks : IKernelBenchmark
{
    private const int NumHeads = 14, NumKvHeads = 2, HeadDim = 64, BlockSize = 16, TreeNodes = 16;

    private ComputeBackend _backend = null!;
    private DeviceBuffer<float> _query = null!, _output = null!;
    private DeviceBuffer<uint> _keys = null!, _values = null!;
    private KvLayout _layout;
    private int[] _queryOffsets = null!, _contextLens = null!, _blockTables = null!;
    private uint[] _mask = Array.Empty<uint>();
    private int _maxBlocks;

    public static IEnumerable<string> Backends() => BenchBackends.Available();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    public static IEnumerable<int> Batches() => BenchGrid.Pick(new[] { 1, 16 }, new[] { 1, 16, 64, 256 });
    [ParamsSource(nameof(Batches))] public int Batch { get; set; } = 1;

    public static IEnumerable<int> Contexts() => BenchGrid.Pick(new[] { 128, 1024 }, new[] { 128, 1024, 8192 });
    [ParamsSource(nameof(Contexts))] public int Context { get; set; } = 128;

    [Params("decode", "tree")] public string Phase { get; set; } = "decode";

    public static IEnumerable<KvDType> DTypes() => BenchGrid.Pick(new[] { KvDType.F16 }, new[] { KvDType.F16, KvDType.F32 });
    [ParamsSource(nameof(DTypes))] public KvDType DType { get; set; } = KvDType.F16;

    private int NewTokens => Phase == "tree" ? TreeNodes : 1;
    private int RowWords => DType == KvDType.F16 ? NumKvHeads * HeadDim / 2 : NumKvHeads * HeadDim;

    public long BytesTouched(string method)
    {
        long kv = (long)Batch * (Context + NewTokens) * RowWords * 4 * 2;
        long qo = (long)Batch * NewTokens * NumHeads * HeadDim * 4 * 2;
        return kv + qo;
    }

    [GlobalSetup]
    public void Setup()
    {
        _backend = BenchBackends.Get(Backend);
        int slotsPerSample = Context + NewTokens;
        _maxBlocks = (slotsPerSample + BlockSize - 1) / BlockSize;
        _layout = new KvLayout(Batch * _maxBlocks, BlockSize, NumKvHeads, HeadDim, DType);
        if (_layout.TotalWords * 4 > Math.Min(_backend.Info.Limits.MaxStorageBufferRange, BenchGrid.MaxBufferBytes))
            throw new InvalidOperationException($"skipped: a {(_layout.TotalWords * 4) >> 20} MiB cache layer exceeds this device's storage-buffer range or the grid's cap");
        var random = new Random(17);
        var physical = Enumerable.Range(0, _layout.NumBlocks).OrderBy(_ => random.Next()).ToArray();
        _blockTables = physical; // sample s uses entries [s * maxBlocks, (s + 1) * maxBlocks)
        _contextLens = Enumerable.Repeat(Context, Batch).ToArray();
        _queryOffsets = Enumerable.Range(0, Batch + 1).Select(s => s * NewTokens).ToArray();
        if (Phase == "tree")
        {
            // Binary tree: node j's parent is (j − 1) / 2; a node sees itself and its ancestors.
            var rows = new uint[TreeNodes];
            for (int j = 0; j < TreeNodes; j++) rows[j] = (1u << j) | (j == 0 ? 0 : rows[(j - 1) / 2]);
            _mask = Enumerable.Range(0, Batch).SelectMany(_ => rows).ToArray();
        }
        int numTokens = Batch * NewTokens;
        _query = _backend.Allocate<float>((long)numTokens * NumHeads * HeadDim, "query");
        _query.Write(BenchData.Uniform((long)numTokens * NumHeads * HeadDim, seed: 19));
        _output = _backend.Allocate<float>((long)numTokens * NumHeads * HeadDim, "output");
        _keys = _backend.Allocate<uint>(_layout.TotalWords, "key cache");
        _values = _backend.Allocate<uint>(_layout.TotalWords, "value cache");
        _keys.Write(CacheWords(_layout, seed: 23));
        _values.Write(CacheWords(_layout, seed: 29));
        _backend.Flush();
    }

    private static uint[] CacheWords(KvLayout layout, int seed)
    {
        var values = BenchData.Uniform(layout.TotalWords * (layout.DType == KvDType.F16 ? 2 : 1), seed);
        var words = new uint[layout.TotalWords];
        for (long w = 0; w < words.Length; w++)
            words[w] = layout.DType == KvDType.F32
                ? BitConverter.SingleToUInt32Bits(values[w])
                : BitConverter.HalfToUInt16Bits((Half)values[2 * w]) | ((uint)BitConverter.HalfToUInt16Bits((Half)values[2 * w + 1]) << 16);
        return words;
    }

    [Benchmark]
    public void Attention()
    {
        var batch = new AttentionBatch
        {
            QueryOffsets = _queryOffsets, ContextLens = _contextLens, BlockTables = _blockTables, MaxBlocksPerSample = _maxBlocks,
            TreeMask = _mask, MaskWords = _mask.Length == 0 ? 0 : 1, NumHeads = NumHeads, Scale = 1f / MathF.Sqrt(HeadDim),
        };
        _backend.Attention(batch, _query, _keys, _values, _layout, _output);
        _backend.Flush();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _query?.Dispose();
        _output?.Dispose();
        _keys?.Dispose();
        _values?.Dispose();
    }
}
