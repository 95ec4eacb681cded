using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Vulkan;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer.Dense;

/// <summary>
/// The dense parts as Vulkan compute shaders (<see cref="VulkanBackend"/>'s dense ops): the weights are uploaded
/// once into device buffers (fp32, or fp16 with fp32 accumulation) and refreshed by <see cref="Refresh"/> after an
/// optimizer step; the activations live on the device. Every op is recorded, not waited for, so a layer's dense
/// ops are one submit through the host contract (<see cref="IDenseExecutor"/>: the activations cross to the host
/// per layer half), and with <see cref="TransformerModel"/>'s device path (<see cref="OnDevice"/>) a whole forward —
/// embedding, dense layers, KV appends, attention, LM head on the requested rows — is recorded before one submit.
/// </summary>
/// <remarks>
/// Projections take the matrix-vector path up to <see cref="VulkanBackend.MatVecMaxTokens"/> tokens and the tiled
/// path above it (<see cref="VulkanBackend.ChooseMatMulPath"/>); each path is batch-invariant on its own, so greedy
/// speculation equals plain decoding as long as a step's tokens stay on one side of that bound.
/// </remarks>
internal sealed class VulkanDenseExecutor : IDenseExecutor
{
    /// <summary>A weight matrix [Rows, Cols] in fp32 or fp16.</summary>
    private sealed class Matrix(DeviceBuffer<float>? f32, DeviceBuffer<Half>? f16, int rows, int cols) : IDisposable
    {
        public DeviceBuffer<float>? F32 = f32;
        public DeviceBuffer<Half>? F16 = f16;
        public readonly int Rows = rows, Cols = cols;

        public void Dispose()
        {
            F32?.Dispose();
            F16?.Dispose();
        }
    }

    private sealed class Layer
    {
        public required DeviceBuffer<float> InputNorm, PostNorm;
        public required Matrix Wq, Wk, Wv, Wo, Wg, Wu, Wd;
        public DeviceBuffer<float>? Bq, Bk, Bv, Bo, Bg, Bu, Bd;
    }

    private readonly TransformerWeights _weights;
    private readonly DecoderGraphSpec _spec;
    private readonly VulkanBackend _vk;
    private readonly bool _half;
    private readonly int _maxContext;
    private readonly Layer[] _layers;
    private readonly Matrix _embed, _head;           // the same object when the embeddings are tied
    private readonly DeviceBuffer<float> _finalNorm;
    private readonly List<(string Name, object Buffer)> _uploads = new();   // every weight buffer with its arena name

    // Activations, grown to a capacity in tokens / rows, never per step.
    private int _tokenCapacity, _rowCapacity;
    private DeviceBuffer<float>? _x, _h, _q, _k, _v, _attended, _gate, _up;   // [T, H] ×2, [T, Hq·Hd], [T, Hkv·Hd] ×2, [T, Hq·Hd], [T, I] ×2
    private DeviceBuffer<float>? _headRows, _headNormed, _logits;              // [R, H] ×2, [R, V] (host-contract head)
    private DeviceBuffer<float>? _cos, _sin;                                    // [positions, Hd]
    private int _ropePositions;
    private int[] _positions = [];
    private int _tokens;

    /// <param name="backend">The device; on host-visible memory (lavapipe, unified memory) the uploads are plain copies.</param>
    /// <param name="halfWeights">Keep the matrices in fp16 (half the memory and read traffic; accumulation stays fp32).</param>
    public VulkanDenseExecutor(TransformerWeights weights, VulkanBackend backend, int maxContext, bool halfWeights = false)
    {
        _weights = weights;
        _spec = weights.Spec;
        _vk = backend;
        _half = halfWeights;
        _maxContext = maxContext;
        var spec = _spec;
        int h = spec.HiddenSize, ff = spec.IntermediateSize, qw = spec.NumHeads * spec.HeadDim, kvw = spec.NumKvHeads * spec.HeadDim;
        try
        {
            _layers = new Layer[spec.NumLayers];
            for (int l = 0; l < spec.NumLayers; l++)
            {
                string p = $"model.layers.{l}.";
                _layers[l] = new Layer
                {
                    InputNorm = Vector(p + "input_layernorm.weight"),
                    PostNorm = Vector(p + "post_attention_layernorm.weight"),
                    Wq = NewMatrix(p + "self_attn.q_proj.weight", qw, h), Bq = spec.QkvBias ? Vector(p + "self_attn.q_proj.bias") : null,
                    Wk = NewMatrix(p + "self_attn.k_proj.weight", kvw, h), Bk = spec.QkvBias ? Vector(p + "self_attn.k_proj.bias") : null,
                    Wv = NewMatrix(p + "self_attn.v_proj.weight", kvw, h), Bv = spec.QkvBias ? Vector(p + "self_attn.v_proj.bias") : null,
                    Wo = NewMatrix(p + "self_attn.o_proj.weight", h, qw), Bo = spec.OutputBias ? Vector(p + "self_attn.o_proj.bias") : null,
                    Wg = NewMatrix(p + "mlp.gate_proj.weight", ff, h), Bg = spec.MlpBias ? Vector(p + "mlp.gate_proj.bias") : null,
                    Wu = NewMatrix(p + "mlp.up_proj.weight", ff, h), Bu = spec.MlpBias ? Vector(p + "mlp.up_proj.bias") : null,
                    Wd = NewMatrix(p + "mlp.down_proj.weight", h, ff), Bd = spec.MlpBias ? Vector(p + "mlp.down_proj.bias") : null,
                };
            }
            _finalNorm = Vector(DenseGraphs.FinalNorm);
            _embed = NewMatrix("model.embed_tokens.weight", spec.VocabSize, h);
            _head = spec.TiedEmbeddings ? _embed : NewMatrix("lm_head.weight", spec.VocabSize, h);
            Refresh();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Name => _half ? "vulkan-f16" : "vulkan";

    /// <summary>The backend the activations live on: <see cref="TransformerModel"/> keeps the whole forward on it when it is its own.</summary>
    public VulkanBackend Backend => _vk;

    private DeviceBuffer<float> Vector(string name)
    {
        var b = _vk.Allocate<float>(_weights.Arena.Span(name).Length, "dense:" + name);
        _uploads.Add((name, b));
        return b;
    }

    private Matrix NewMatrix(string name, int rows, int cols)
    {
        long n = (long)rows * cols;
        Matrix m = _half
            ? new Matrix(null, _vk.Allocate<Half>((n + 3) / 4 * 4, "dense:" + name), rows, cols)   // whole 8-byte words
            : new Matrix(_vk.Allocate<float>(n, "dense:" + name), null, rows, cols);
        _uploads.Add((name, m));
        return m;
    }

    /// <summary>Copies every weight from the arena to the device (after an optimizer step); returns the seconds it took.</summary>
    public double Refresh()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Half[] staging = [];
        foreach (var (name, buffer) in _uploads)
        {
            var source = _weights.Arena.Span(name);
            switch (buffer)
            {
                case DeviceBuffer<float> v: v.Write(source); break;
                case Matrix { F32: { } f }: f.Write(source); break;
                case Matrix { F16: { } f }:
                    if (staging.Length < source.Length) staging = new Half[source.Length];
                    for (int i = 0; i < source.Length; i++) staging[i] = (Half)source[i];
                    f.Write(staging.AsSpan(0, source.Length));
                    break;
            }
        }
        return clock.Elapsed.TotalSeconds;
    }

    // ---- the host contract: activations cross to the host per layer half ----

    public void First(DenseActivations a)
    {
        Prepare(a.Tokens, a.Positions32);
        _x!.Write(a.X.AsSpan(0, a.Tokens * _spec.HiddenSize));
        BeforeAttention(_layers[0]);
        ReadQkv(a);
    }

    public void Next(int layer, DenseActivations a)
    {
        int t = _tokens, qw = _spec.NumHeads * _spec.HeadDim;
        _attended!.Write(a.Attended.AsSpan(0, t * qw));
        AfterAttention(_layers[layer]);
        if (layer + 1 < _layers.Length)
        {
            BeforeAttention(_layers[layer + 1]);
            ReadQkv(a);
        }
        else _x!.Read(a.X.AsSpan(0, t * _spec.HiddenSize));
    }

    public void Head(DenseActivations a)
    {
        int rows = a.Rows, h = _spec.HiddenSize, vocab = _spec.VocabSize;
        if (rows == 0) return;
        GrowRows(rows);
        _headRows!.Write(a.HeadRows.AsSpan(0, rows * h));
        _vk.RmsNorm(_headRows, _finalNorm, rows, h, (float)_spec.RmsEps, _headNormed!);
        Project(_headNormed!, rows, _head, null, _logits!, accumulate: false);
        _logits!.Read(a.Logits.AsSpan(0, rows * vocab));
    }

    private void ReadQkv(DenseActivations a)
    {
        int t = _tokens, qw = _spec.NumHeads * _spec.HeadDim, kvw = _spec.NumKvHeads * _spec.HeadDim;
        _q!.Read(a.Q.AsSpan(0, t * qw));
        _k!.Read(a.K.AsSpan(0, t * kvw));
        _v!.Read(a.V.AsSpan(0, t * kvw));
    }

    // ---- the device path: nothing crosses to the host until the caller reads the logits ----

    /// <summary>The device-resident forward's buffers and steps, for <see cref="TransformerModel"/> on the same backend.</summary>
    public DeviceForward OnDevice => new(this);

    internal readonly struct DeviceForward(VulkanDenseExecutor e)
    {
        /// <summary>Embeds <paramref name="tokens"/> on the device and records layer 0's part before attention.</summary>
        public void First(ReadOnlySpan<int> tokens, ReadOnlySpan<int> positions)
        {
            e.Prepare(tokens.Length, positions);
            var embed = e._embed;
            if (embed.F32 is { } f) e._vk.Embed(tokens, f, embed.Rows, embed.Cols, e._x!);
            else e._vk.Embed(tokens, embed.F16!, embed.Rows, embed.Cols, e._x!);
            e.BeforeAttention(e._layers[0]);
        }

        /// <summary>Records layer <paramref name="layer"/>'s part after attention (reading <see cref="Attended"/>) and the next layer's part before it.</summary>
        public void Next(int layer)
        {
            e.AfterAttention(e._layers[layer]);
            if (layer + 1 < e._layers.Length) e.BeforeAttention(e._layers[layer + 1]);
        }

        /// <summary>Records the final norm of rows <paramref name="rows"/> of the stream and the LM head into <paramref name="logits"/> // [rows, V].</summary>
        public void Head(ReadOnlySpan<int> rows, DeviceBuffer<float> logits)
        {
            if (rows.IsEmpty) return;
            e.GrowRows(rows.Length);
            e._vk.RmsNorm(e._x!, e._finalNorm, rows.Length, e._spec.HiddenSize, (float)e._spec.RmsEps, e._headNormed!, rows);
            e.Project(e._headNormed!, rows.Length, e._head, null, logits, accumulate: false);
        }

        public DeviceBuffer<float> Q => e._q!;       // [T, Hq·Hd] after RoPE
        public DeviceBuffer<float> K => e._k!;       // [T, Hkv·Hd] after RoPE
        public DeviceBuffer<float> V => e._v!;       // [T, Hkv·Hd]
        public DeviceBuffer<float> Attended => e._attended!;   // [T, Hq·Hd], written by the attention kernel
    }

    // ---- the ops of a layer ----

    private void BeforeAttention(Layer w)
    {
        int t = _tokens, h = _spec.HiddenSize, d = _spec.HeadDim, qw = _spec.NumHeads * d, kvw = _spec.NumKvHeads * d;
        var positions = _positions.AsSpan(0, t);
        _vk.RmsNorm(_x!, w.InputNorm, t, h, (float)_spec.RmsEps, _h!);
        Project(_h!, t, w.Wq, w.Bq, _q!, accumulate: false);
        Project(_h!, t, w.Wk, w.Bk, _k!, accumulate: false);
        Project(_h!, t, w.Wv, w.Bv, _v!, accumulate: false);
        _vk.Rope(_q!, t, _spec.NumHeads, d, qw, positions, _cos!, _sin!);
        _vk.Rope(_k!, t, _spec.NumKvHeads, d, kvw, positions, _cos!, _sin!);
    }

    private void AfterAttention(Layer w)
    {
        int t = _tokens, h = _spec.HiddenSize;
        Project(_attended!, t, w.Wo, w.Bo, _x!, accumulate: true);   // residual fused
        _vk.RmsNorm(_x!, w.PostNorm, t, h, (float)_spec.RmsEps, _h!);
        Project(_h!, t, w.Wg, w.Bg, _gate!, accumulate: false);
        Project(_h!, t, w.Wu, w.Bu, _up!, accumulate: false);
        _vk.SwiGlu(_gate!, _up!, (long)t * _spec.IntermediateSize);
        Project(_gate!, t, w.Wd, w.Bd, _x!, accumulate: true);       // residual fused
    }

    /// <summary>y[t, :] (+)= x[t, :]·Wᵀ (+ bias), y dense [tokens, W.Rows].</summary>
    private void Project(DeviceBuffer<float> x, int tokens, Matrix w, DeviceBuffer<float>? bias, DeviceBuffer<float> y, bool accumulate)
    {
        if (w.F32 is { } f) _vk.Project(x, tokens, w.Cols, w.Cols, f, w.Rows, bias, y, w.Rows, 0, accumulate);
        else _vk.Project(x, tokens, w.Cols, w.Cols, w.F16!, w.Rows, bias, y, w.Rows, 0, accumulate);
    }

    /// <summary>Buffers for <paramref name="tokens"/> tokens, RoPE tables up to the largest position, positions kept for the layers.</summary>
    private void Prepare(int tokens, ReadOnlySpan<int> positions)
    {
        _tokens = tokens;
        if (_positions.Length < tokens) _positions = new int[DenseActivations.Capacity(tokens)];
        positions[..tokens].CopyTo(_positions);
        int needed = 0;
        foreach (int p in positions[..tokens]) needed = Math.Max(needed, p + 1);
        if (needed > _ropePositions) GrowRope(needed);
        if (tokens <= _tokenCapacity) return;
        int capacity = DenseActivations.Capacity(tokens);
        int h = _spec.HiddenSize, ff = _spec.IntermediateSize, qw = _spec.NumHeads * _spec.HeadDim, kvw = _spec.NumKvHeads * _spec.HeadDim;
        DisposeActivations();
        _x = _vk.Allocate<float>((long)capacity * h, "dense.x");
        _h = _vk.Allocate<float>((long)capacity * h, "dense.normed");
        _q = _vk.Allocate<float>((long)capacity * qw, "dense.q");
        _k = _vk.Allocate<float>((long)capacity * kvw, "dense.k");
        _v = _vk.Allocate<float>((long)capacity * kvw, "dense.v");
        _attended = _vk.Allocate<float>((long)capacity * qw, "dense.attended");
        _gate = _vk.Allocate<float>((long)capacity * ff, "dense.gate");
        _up = _vk.Allocate<float>((long)capacity * ff, "dense.up");
        _tokenCapacity = capacity;
    }

    private void GrowRows(int rows)
    {
        if (rows <= _rowCapacity) return;
        int capacity = DenseActivations.Capacity(rows);
        _headRows?.Dispose(); _headNormed?.Dispose(); _logits?.Dispose();
        _headRows = _vk.Allocate<float>((long)capacity * _spec.HiddenSize, "dense.head-rows");
        _headNormed = _vk.Allocate<float>((long)capacity * _spec.HiddenSize, "dense.head-normed");
        _logits = _vk.Allocate<float>((long)capacity * _spec.VocabSize, "dense.logits");
        _rowCapacity = capacity;
    }

    /// <summary>cos/sin tables [positions, Hd] as <see cref="CpuDense.RopeTable"/> rounds them (the CPU executors' values), grown by doubling up to the context.</summary>
    private void GrowRope(int needed)
    {
        int positions = Math.Min(Math.Max(needed, 2 * _ropePositions), Math.Max(_maxContext, needed));
        int d = _spec.HeadDim;
        var cos = new float[positions * d];
        var sin = new float[positions * d];
        CpuDense.RopeTable(d, _spec.RopeTheta, 0, positions, cos, sin);
        _cos?.Dispose(); _sin?.Dispose();
        _cos = _vk.Allocate<float>(cos.Length, "dense.rope-cos");
        _sin = _vk.Allocate<float>(sin.Length, "dense.rope-sin");
        _cos.Write(cos);
        _sin.Write(sin);
        _ropePositions = positions;
    }

    private void DisposeActivations()
    {
        _x?.Dispose(); _h?.Dispose(); _q?.Dispose(); _k?.Dispose(); _v?.Dispose(); _attended?.Dispose(); _gate?.Dispose(); _up?.Dispose();
    }

    public void Dispose()
    {
        DisposeActivations();
        _headRows?.Dispose(); _headNormed?.Dispose(); _logits?.Dispose();
        _cos?.Dispose(); _sin?.Dispose();
        foreach (var (_, buffer) in _uploads) ((IDisposable)buffer).Dispose();
        _uploads.Clear();
    }
}
