using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Benches;

/// <summary>The sample kernel: one pass (greedy) or a few passes (temperature, top-p) over [rows, vocab] logits.</summary>
public class SampleBenchmarks : IKernelBenchmark
{
    private ComputeBackend _backend = null!;
    private DeviceBuffer<float> _logits = null!;
    private SamplingParams[] _params = null!;
    private int[] _tokens = null!;
    private float[] _logProbs = null!;

    public static IEnumerable<string> Backends() => BenchBackends.Available();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    public static IEnumerable<int> RowCounts() => BenchGrid.Pick(new[] { 1, 64 }, new[] { 1, 16, 64, 256 });
    [ParamsSource(nameof(RowCounts))] public int Rows { get; set; } = 1;

    public static IEnumerable<int> Vocabs() => BenchGrid.Pick(new[] { 32000, 151936 }, new[] { 32000, 50257, 151936 });
    [ParamsSource(nameof(Vocabs))] public int Vocab { get; set; } = 32000;

    /// <summary>greedy: argmax; sampled: temperature 1 with top-p 0.95.</summary>
    [Params("greedy", "sampled")] public string Mode { get; set; } = "greedy";

    public long BytesTouched(string method) => (long)Rows * Vocab * 4;

    [GlobalSetup]
    public void Setup()
    {
        _backend = BenchBackends.Get(Backend);
        _logits = _backend.Allocate<float>((long)Rows * Vocab, "logits");
        _logits.Write(BenchData.Logits(Rows * Vocab, seed: 7));
        _params = Enumerable.Range(0, Rows).Select(r => Mode == "greedy"
            ? SamplingParams.Greedy((uint)r, 100)
            : SamplingParams.Random(1f, seed: 42, sampleId: (uint)r, position: 100, topP: 0.95f)).ToArray();
        _tokens = new int[Rows];
        _logProbs = new float[Rows];
    }

    [Benchmark]
    public void Sample() => _backend.Sample(_params, _logits, Vocab, _tokens, _logProbs);

    [GlobalCleanup]
    public void Cleanup() => _logits.Dispose();
}
