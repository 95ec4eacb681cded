using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// The verify kernel on draft chains whose every token is accepted (the target and draft logits are boosted at
/// the drafted token), the worst case: every row is decided, so its time compares with one pass over the
/// logits (the %copy column; ≥ 50 % means within 2× of one pass).
/// </summary>
public class VerifyBenchmarks : IKernelBenchmark
{
    private ComputeBackend _backend = null!;
    private DeviceBuffer<float> _target = null!;
    private DeviceBuffer<float>? _draft;
    private int[] _offsets = null!, _tokens = null!, _parents = null!, _accepted = null!, _acceptedNodes = null!, _next = null!;
    private SamplingParams[] _params = null!;
    private DraftKind[] _kinds = null!;
    private float[] _logProbs = null!;

    public static IEnumerable<string> Backends() => BenchBackends.Available();
    [ParamsSource(nameof(Backends))] public string Backend { get; set; } = "cpu";

    public static IEnumerable<int> Batches() => BenchGrid.Pick(new[] { 1, 16 }, new[] { 1, 16, 64, 256 });
    [ParamsSource(nameof(Batches))] public int Batch { get; set; } = 1;

    public static IEnumerable<int> DraftLengths() => BenchGrid.Pick(new[] { 4, 16 }, new[] { 1, 4, 16, 64 });
    [ParamsSource(nameof(DraftLengths))] public int DraftTokens { get; set; } = 4;

    public static IEnumerable<int> Vocabs() => BenchGrid.Pick(new[] { 151936 }, new[] { 32000, 151936 });
    [ParamsSource(nameof(Vocabs))] public int Vocab { get; set; } = 151936;

    /// <summary>greedy; sampled-q: draft model chains (q read); sampled-noq: model-free drafts (one-hot q).</summary>
    public static IEnumerable<string> Modes() => BenchGrid.Pick(new[] { "greedy", "sampled-q" }, new[] { "greedy", "sampled-q", "sampled-noq" });
    [ParamsSource(nameof(Modes))] public string Mode { get; set; } = "greedy";

    private int Rows => Batch * (DraftTokens + 1);
    public long BytesTouched(string method) => (long)Rows * Vocab * 4 * (Mode == "sampled-q" ? 2 : 1);

    [GlobalSetup]
    public void Setup()
    {
        if ((long)Rows * Vocab * 4 > BenchGrid.MaxBufferBytes)
            throw new InvalidOperationException($"skipped: {Rows} x {Vocab} logits exceed the grid's buffer cap");
        _backend = BenchBackends.Get(Backend);
        var random = new Random(3);
        int nodes = Batch * DraftTokens;
        _offsets = Enumerable.Range(0, Batch + 1).Select(s => s * DraftTokens).ToArray();
        _tokens = new int[nodes];
        _parents = new int[nodes];
        var target = BenchData.Logits((long)Rows * Vocab, seed: 11);
        var draft = Mode == "sampled-q" ? BenchData.Logits((long)Rows * Vocab, seed: 12) : null;
        for (int s = 0; s < Batch; s++)
            for (int j = 0; j < DraftTokens; j++)
            {
                int node = s * DraftTokens + j, token = random.Next(Vocab);
                _tokens[node] = token;
                _parents[node] = j - 1;
                long decidedAt = (long)(s * (DraftTokens + 1) + j) * Vocab + token; // the parent's row
                target[decidedAt] += 30f;
                if (draft is not null) draft[decidedAt] += 30f;
            }
        _target = _backend.Allocate<float>((long)Rows * Vocab, "target logits");
        _target.Write(target);
        if (draft is not null)
        {
            _draft = _backend.Allocate<float>((long)Rows * Vocab, "draft logits");
            _draft.Write(draft);
        }
        _params = Enumerable.Range(0, Batch).Select(s => Mode == "greedy"
            ? SamplingParams.Greedy((uint)s, 50)
            : SamplingParams.Random(1f, seed: 5, sampleId: (uint)s, position: 50)).ToArray();
        _kinds = Enumerable.Repeat(Mode == "sampled-q" ? DraftKind.Sampled : DraftKind.Deterministic, Batch).ToArray();
        _accepted = new int[Batch];
        _acceptedNodes = new int[nodes];
        _next = new int[Batch];
        _logProbs = new float[Rows];
    }

    [Benchmark]
    public void Verify()
    {
        var batch = new VerifyBatch
        {
            NodeOffsets = _offsets, DraftTokens = _tokens, Parents = _parents, Params = _params, Kinds = _kinds, VocabSize = Vocab,
        };
        var outputs = new VerifyOutputs { AcceptedCount = _accepted, AcceptedNodes = _acceptedNodes, NextToken = _next, LogProbs = _logProbs };
        _backend.Verify(batch, _target, _draft, outputs);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _target?.Dispose();
        _draft?.Dispose();
    }
}
