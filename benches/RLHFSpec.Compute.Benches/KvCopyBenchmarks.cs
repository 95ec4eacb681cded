using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// kv_move copy. "blocks": whole fp16 blocks (16 slots × 8 KV heads × 128) copied to another cache, one segment
/// per block (migration between instances); "compact": in-place compaction of accepted tree nodes, 16 slot moves
/// per sample segment, every destination below its source. GB/s = 2 × bytes moved; target ≥ 70 %copy.
/// </summary>
public class KvCopyBenchmarks : IKernelBenchmark
{
    private const int RowWords = 8 * 128 / 2, BlockSize = 16, BlockWords = RowWords * BlockSize, PairsPerSegment = 16;

    private ComputeBackend _backend = null!;
    private DeviceBuffer<uint> _source = null!, _destination = null!;
    private int[] _sourceRows = null!, _destinationRows = null!, _segments = null!;
    private int _rowWords;

    public static IEnumerable<string> Backends() => BenchBackends.Available();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    [Params("blocks", "compact")] public string Mode { get; set; } = "blocks";

    public static IEnumerable<int> Sizes() => BenchGrid.Pick(new[] { 4, 32 }, new[] { 1, 4, 32, 96 });
    /// <summary>MiB moved per call.</summary>
    [ParamsSource(nameof(Sizes))] public int MiB { get; set; } = 4;

    private int Pairs => (int)(((long)MiB << 20) / (4L * (Mode == "blocks" ? BlockWords : RowWords)));
    public long BytesTouched(string method) => 2L * Pairs * (Mode == "blocks" ? BlockWords : RowWords) * 4;

    [GlobalSetup]
    public void Setup()
    {
        _backend = BenchBackends.Get(Backend);
        var random = new Random(41);
        int pairs = Pairs;
        if (Mode == "blocks")
        {
            _rowWords = BlockWords;
            _sourceRows = Enumerable.Range(0, pairs).OrderBy(_ => random.Next()).ToArray();
            _destinationRows = Enumerable.Range(0, pairs).OrderBy(_ => random.Next()).ToArray();
            _segments = Enumerable.Range(0, pairs + 1).ToArray();
            _source = _backend.Allocate<uint>((long)pairs * BlockWords, "source cache");
            _destination = _backend.Allocate<uint>((long)pairs * BlockWords, "destination cache");
        }
        else
        {
            // Segment g owns slots [2·16·g, 2·16·(g+1)); its pair j moves slot 2j + 1 down to slot j.
            _rowWords = RowWords;
            int segments = pairs / PairsPerSegment;
            _sourceRows = new int[pairs];
            _destinationRows = new int[pairs];
            for (int g = 0; g < segments; g++)
                for (int j = 0; j < PairsPerSegment; j++)
                {
                    int baseSlot = g * 2 * PairsPerSegment;
                    _sourceRows[g * PairsPerSegment + j] = baseSlot + 2 * j + 1;
                    _destinationRows[g * PairsPerSegment + j] = baseSlot + j;
                }
            _segments = Enumerable.Range(0, segments + 1).Select(g => g * PairsPerSegment).ToArray();
            _source = _destination = _backend.Allocate<uint>(2L * pairs * RowWords, "cache");
        }
        var fill = new uint[_source.Length];
        new Random(43).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(fill.AsSpan()));
        _source.Write(fill);
        _backend.Flush();
    }

    [Benchmark]
    public void CopyKv()
    {
        _backend.CopyKv(_source, _destination, _sourceRows, _destinationRows, _segments, _rowWords);
        _backend.Flush();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _source?.Dispose();
        if (!ReferenceEquals(_source, _destination)) _destination?.Dispose();
    }
}
