using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Benches;

/// <summary>The top-tokens kernel (a draft tree's expansion): two passes over each requested [vocab] row, K pairs back.</summary>
public class TopTokensBenchmarks : IKernelBenchmark
{
    private ComputeBackend _backend = null!;
    private DeviceBuffer<float> _logits = null!;
    private SamplingParams[] _params = null!;
    private int[] _rows = null!, _tokens = null!;
    private double[] _probabilities = null!;

    public static IEnumerable<string> Backends() => BenchBackends.Available();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    public static IEnumerable<int> RowCounts() => BenchGrid.Pick(new[] { 8, 64 }, new[] { 1, 8, 64, 256 });
    [ParamsSource(nameof(RowCounts))] public int Rows { get; set; } = 8;

    public static IEnumerable<int> Vocabs() => BenchGrid.Pick(new[] { 32000, 151936 }, new[] { 32000, 50257, 151936 });
    [ParamsSource(nameof(Vocabs))] public int Vocab { get; set; } = 32000;

    [Params(2, 8)] public int K { get; set; } = 2;

    public long BytesTouched(string method) => (long)Rows * Vocab * 4;

    [GlobalSetup]
    public void Setup()
    {
        _backend = BenchBackends.Get(Backend);
        _logits = _backend.Allocate<float>((long)Rows * Vocab, "logits");
        _logits.Write(BenchData.Logits(Rows * Vocab, seed: 7));
        _params = Enumerable.Range(0, Rows).Select(r => SamplingParams.Random(0.8f, seed: 42, sampleId: (uint)r, position: 100)).ToArray();
        _rows = Enumerable.Range(0, Rows).ToArray();
        _tokens = new int[Rows * K];
        _probabilities = new double[Rows * K];
    }

    [Benchmark]
    public void TopTokens() => _backend.TopTokens(_params, _logits, _rows, Vocab, K, _tokens, _probabilities);

    [GlobalCleanup]
    public void Cleanup() => _logits.Dispose();
}
