using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer.Dense;

/// <summary>
/// The dense parts in the engine's managed SIMD kernels (<see cref="CpuDense"/>) on a pool of CPU workers: one
/// parallel region per layer half, the ops inside it separated by spin barriers, so a decode step pays no
/// per-call framework cost — where an ONNX Runtime run of a layer costs tens of microseconds before any arithmetic.
/// Each worker owns a slice of every projection's output rows (heads for q/k/v, so RoPE needs no exchange), reads
/// its weight rows in place from the arena, and the residual adds are fused into the output and down projections.
/// Results are batch-invariant (see <see cref="CpuDense"/>).
/// </summary>
internal sealed unsafe class ManagedDenseExecutor : IDenseExecutor, IParallelWork
{
    private unsafe struct Layer
    {
        public float* InputNorm, Wq, Bq, Wk, Bk, Wv, Bv, Wo, Bo, PostNorm, Wg, Bg, Wu, Bu, Wd, Bd;
    }

    private enum Phase { First, Next, Head }

    private readonly DecoderGraphSpec _spec;
    private readonly Layer[] _layers;
    private readonly float* _finalNorm, _headWeight;
    private readonly CpuWorkers _workers;
    private readonly bool _ownsWorkers;
    private readonly int _maxContext;
    private float[] _h = [], _gate = [], _up = [];   // [T, H] normed stream; [T, I] MLP gate (then its product), up
    private float[] _cos = [], _sin = [];           // [positions, Hd] RoPE tables, grown to the largest position seen
    private int _ropePositions;

    // The region in flight.
    private Phase _phase;
    private int _layer;
    private DenseActivations? _a;

    /// <param name="workers">The pool to run on (a CPU backend's); null = a pool of <paramref name="threads"/> owned by this executor.</param>
    public ManagedDenseExecutor(TransformerWeights weights, int maxContext, CpuWorkers? workers, int threads)
    {
        _spec = weights.Spec;
        _maxContext = maxContext;
        var arena = weights.Arena;
        float* At(string name) => (float*)arena.Address(name);
        float* Bias(string name, bool has) => has ? At(name) : null;
        _layers = new Layer[_spec.NumLayers];
        for (int l = 0; l < _spec.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            _layers[l] = new Layer
            {
                InputNorm = At(p + "input_layernorm.weight"),
                Wq = At(p + "self_attn.q_proj.weight"), Bq = Bias(p + "self_attn.q_proj.bias", _spec.QkvBias),
                Wk = At(p + "self_attn.k_proj.weight"), Bk = Bias(p + "self_attn.k_proj.bias", _spec.QkvBias),
                Wv = At(p + "self_attn.v_proj.weight"), Bv = Bias(p + "self_attn.v_proj.bias", _spec.QkvBias),
                Wo = At(p + "self_attn.o_proj.weight"), Bo = Bias(p + "self_attn.o_proj.bias", _spec.OutputBias),
                PostNorm = At(p + "post_attention_layernorm.weight"),
                Wg = At(p + "mlp.gate_proj.weight"), Bg = Bias(p + "mlp.gate_proj.bias", _spec.MlpBias),
                Wu = At(p + "mlp.up_proj.weight"), Bu = Bias(p + "mlp.up_proj.bias", _spec.MlpBias),
                Wd = At(p + "mlp.down_proj.weight"), Bd = Bias(p + "mlp.down_proj.bias", _spec.MlpBias),
            };
        }
        _finalNorm = At(DenseGraphs.FinalNorm);
        _headWeight = At(_spec.TiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight");
        _ownsWorkers = workers is null;
        _workers = workers ?? new CpuWorkers(threads);
    }

    public string Name => "managed";

    /// <summary>Participants of each parallel region.</summary>
    public int Threads => _workers.Count;

    public void First(DenseActivations a)
    {
        Prepare(a);
        Run(Phase.First, 0, a);
    }

    public void Next(int layer, DenseActivations a) => Run(Phase.Next, layer, a);

    public void Head(DenseActivations a)
    {
        Grow(ref _h, (long)a.Rows * _spec.HiddenSize);
        Run(Phase.Head, 0, a);
    }

    private void Run(Phase phase, int layer, DenseActivations a)
    {
        _phase = phase;
        _layer = layer;
        _a = a;
        try { _workers.Run(this); }
        finally { _a = null; }
    }

    /// <summary>Scratch for the forward's token count; RoPE tables up to its largest position.</summary>
    private void Prepare(DenseActivations a)
    {
        int t = a.Tokens;
        Grow(ref _h, (long)t * _spec.HiddenSize);
        Grow(ref _gate, (long)t * _spec.IntermediateSize);
        Grow(ref _up, (long)t * _spec.IntermediateSize);
        int needed = 0;
        for (int i = 0; i < t; i++) needed = Math.Max(needed, a.Positions32[i] + 1);
        if (needed <= _ropePositions) return;
        int positions = Math.Min(Math.Max(needed, 2 * _ropePositions), Math.Max(_maxContext, needed));
        int d = _spec.HeadDim;
        var cos = GC.AllocateArray<float>(positions * d, pinned: true);
        var sin = GC.AllocateArray<float>(positions * d, pinned: true);
        _cos.AsSpan(0, _ropePositions * d).CopyTo(cos);
        _sin.AsSpan(0, _ropePositions * d).CopyTo(sin);
        CpuDense.RopeTable(d, _spec.RopeTheta, _ropePositions, positions, cos, sin);
        (_cos, _sin, _ropePositions) = (cos, sin, positions);
    }

    public void Execute(int index, int count)
    {
        var a = _a!;
        switch (_phase)
        {
            case Phase.First:
                BeforeAttention(_layers[0], a, index, count);
                break;
            case Phase.Next:
                AfterAttention(_layers[_layer], a, index, count);
                if (_layer + 1 < _layers.Length)
                {
                    _workers.Barrier();
                    BeforeAttention(_layers[_layer + 1], a, index, count);
                }
                break;
            case Phase.Head:
                HeadPart(a, index, count);
                break;
        }
    }

    /// <summary>RMSNorm, then this participant's q/k/v heads projected and rotated.</summary>
    private void BeforeAttention(in Layer w, DenseActivations a, int index, int count)
    {
        int t = a.Tokens, h = _spec.HiddenSize, d = _spec.HeadDim, hq = _spec.NumHeads, hkv = _spec.NumKvHeads;
        int qw = hq * d, kvw = hkv * d;
        fixed (float* x = a.X, hn = _h, q = a.Q, k = a.K, v = a.V, cos = _cos, sin = _sin)
        fixed (int* pos = a.Positions32)
        {
            var (t0, t1) = Split(t, index, count, 1);
            CpuDense.RmsNorm(x, w.InputNorm, (float)_spec.RmsEps, hn, h, t0, t1);
            _workers.Barrier();
            // Units: q heads, then k heads, then v heads; each participant takes a contiguous run of whole heads.
            var (u0, u1) = Split(hq + 2 * hkv, index, count, 1);
            var (a0, a1) = (Math.Clamp(u0, 0, hq), Math.Clamp(u1, 0, hq));
            if (a0 < a1)
            {
                CpuDense.Project(hn, t, h, w.Wq, w.Bq, q, qw, a0 * d, a1 * d, accumulate: false);
                CpuDense.Rope(q, t, qw, d, a0, a1, pos, cos, sin);
            }
            (a0, a1) = (Math.Clamp(u0 - hq, 0, hkv), Math.Clamp(u1 - hq, 0, hkv));
            if (a0 < a1)
            {
                CpuDense.Project(hn, t, h, w.Wk, w.Bk, k, kvw, a0 * d, a1 * d, accumulate: false);
                CpuDense.Rope(k, t, kvw, d, a0, a1, pos, cos, sin);
            }
            (a0, a1) = (Math.Clamp(u0 - hq - hkv, 0, hkv), Math.Clamp(u1 - hq - hkv, 0, hkv));
            if (a0 < a1) CpuDense.Project(hn, t, h, w.Wv, w.Bv, v, kvw, a0 * d, a1 * d, accumulate: false);
        }
    }

    /// <summary>Output projection into the residual, RMSNorm, SwiGLU, down projection into the residual.</summary>
    private void AfterAttention(in Layer w, DenseActivations a, int index, int count)
    {
        int t = a.Tokens, h = _spec.HiddenSize, ff = _spec.IntermediateSize, qw = _spec.NumHeads * _spec.HeadDim;
        fixed (float* x = a.X, att = a.Attended, hn = _h, gate = _gate, up = _up)
        {
            var (r0, r1) = Split(h, index, count, 4);
            CpuDense.Project(att, t, qw, w.Wo, w.Bo, x, h, r0, r1, accumulate: true);
            _workers.Barrier();
            var (t0, t1) = Split(t, index, count, 1);
            CpuDense.RmsNorm(x, w.PostNorm, (float)_spec.RmsEps, hn, h, t0, t1);
            _workers.Barrier();
            var (f0, f1) = Split(ff, index, count, 4);
            CpuDense.Project(hn, t, h, w.Wg, w.Bg, gate, ff, f0, f1, accumulate: false);
            CpuDense.Project(hn, t, h, w.Wu, w.Bu, up, ff, f0, f1, accumulate: false);
            CpuDense.SiluMul(gate, up, t, ff, f0, f1);
            _workers.Barrier();
            CpuDense.Project(gate, t, ff, w.Wd, w.Bd, x, h, r0, r1, accumulate: true);
        }
    }

    /// <summary>Final RMSNorm of the rows, then this participant's slice of the vocabulary.</summary>
    private void HeadPart(DenseActivations a, int index, int count)
    {
        int rows = a.Rows, h = _spec.HiddenSize, vocab = _spec.VocabSize;
        fixed (float* x = a.HeadRows, hn = _h, logits = a.Logits)
        {
            var (t0, t1) = Split(rows, index, count, 1);
            CpuDense.RmsNorm(x, _finalNorm, (float)_spec.RmsEps, hn, h, t0, t1);
            _workers.Barrier();
            var (v0, v1) = Split(vocab, index, count, 4);
            CpuDense.Project(hn, rows, h, _headWeight, null, logits, vocab, v0, v1, accumulate: false);
        }
    }

    /// <summary>Participant <paramref name="index"/>'s share of [0, n) in runs of <paramref name="align"/>.</summary>
    private static (int Start, int End) Split(int n, int index, int count, int align)
    {
        int chunks = (n + align - 1) / align, per = (chunks + count - 1) / count;
        int start = Math.Min(n, index * per * align);
        return (start, Math.Min(n, start + per * align));
    }

    private static void Grow(ref float[] array, long needed)
    {
        if (array.Length < needed) array = GC.AllocateArray<float>(DenseActivations.Capacity(needed), pinned: true);
    }

    public void Dispose()
    {
        if (_ownsWorkers) _workers.Dispose();
    }
}
