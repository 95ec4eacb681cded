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
/// q/k/v and gate/up are each one projection over one matrix whose rows are the parts' rows (q, k, v; gate, up; the
/// biases likewise), concatenated at upload and at every <see cref="Refresh"/>: the normed activations are read once
/// per group and a layer is 8 dispatches. A rotate-and-split dispatch (<see cref="VulkanBackend.RopeSplit"/>) turns the
/// fused q/k/v rows into the q, k and v buffers attention and the KV append read; SwiGLU works in place on the fused
/// gate/up rows and the down projection reads their gate columns. A row's arithmetic is the same as in its own matrix.
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

    /// <summary>A layer's weights; q/k/v and gate/up each one matrix, their rows concatenated (q, then k, then v; gate, then up).</summary>
    private sealed class Layer
    {
        public required DeviceBuffer<float> InputNorm, PostNorm;
        public required Matrix Wqkv, Wo, WgateUp, Wd;
        public DeviceBuffer<float>? Bqkv, Bo, BgateUp, Bd;
    }

    private readonly TransformerWeights _weights;
    private readonly DecoderGraphSpec _spec;
    private readonly VulkanBackend _vk;
    private readonly bool _half;
    private readonly int _maxContext;
    private readonly Layer[] _layers;
    private readonly Matrix _embed, _head;           // the same object when the embeddings are tied
    private readonly DeviceBuffer<float> _finalNorm;
    private readonly List<(string[] Names, object Buffer)> _uploads = new();   // every weight buffer with the arena tensors concatenated into it

    // Activations, grown to a capacity in tokens / rows, never per step.
    private int _tokenCapacity, _rowCapacity;
    private DeviceBuffer<float>? _x, _h, _qkv, _q, _k, _v, _attended, _gateUp;   // [T, H] ×2, [T, (Hq + 2·Hkv)·Hd], [T, Hq·Hd], [T, Hkv·Hd] ×2, [T, Hq·Hd], [T, 2·I]
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
                string a = $"model.layers.{l}.self_attn.", m = $"model.layers.{l}.mlp.";
                string[] qkv = [a + "q_proj.", a + "k_proj.", a + "v_proj."], gateUp = [m + "gate_proj.", m + "up_proj."];
                _layers[l] = new Layer
                {
                    InputNorm = Vector($"model.layers.{l}.input_layernorm.weight"),
                    PostNorm = Vector($"model.layers.{l}.post_attention_layernorm.weight"),
                    Wqkv = NewMatrix(Suffixed(qkv, "weight"), qw + 2 * kvw, h), Bqkv = spec.QkvBias ? Vector(Suffixed(qkv, "bias")) : null,
                    Wo = NewMatrix([a + "o_proj.weight"], h, qw), Bo = spec.OutputBias ? Vector(a + "o_proj.bias") : null,
                    WgateUp = NewMatrix(Suffixed(gateUp, "weight"), 2 * ff, h), BgateUp = spec.MlpBias ? Vector(Suffixed(gateUp, "bias")) : null,
                    Wd = NewMatrix([m + "down_proj.weight"], h, ff), Bd = spec.MlpBias ? Vector(m + "down_proj.bias") : null,
                };
            }
            _finalNorm = Vector(DenseGraphs.FinalNorm);
            _embed = NewMatrix(["model.embed_tokens.weight"], spec.VocabSize, h);
            _head = spec.TiedEmbeddings ? _embed : NewMatrix(["lm_head.weight"], spec.VocabSize, h);
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

    private static string[] Suffixed(string[] prefixes, string suffix) => prefixes.Select(p => p + suffix).ToArray();

    /// <summary>A device vector holding the arena tensors <paramref name="names"/> one after the other.</summary>
    private DeviceBuffer<float> Vector(params string[] names)
    {
        long n = names.Sum(name => (long)_weights.Arena.Span(name).Length);
        var b = _vk.Allocate<float>(n, "dense:" + string.Join('+', names));
        _uploads.Add((names, b));
        return b;
    }

    /// <summary>A device matrix [rows, cols] whose rows are those of the arena matrices <paramref name="names"/> in order.</summary>
    private Matrix NewMatrix(string[] names, int rows, int cols)
    {
        long n = (long)rows * cols;
        long parts = names.Sum(name => (long)_weights.Arena.Span(name).Length);
        if (parts != n) throw new InvalidOperationException($"{string.Join(" + ", names)}: {parts} weights, expected [{rows}, {cols}]");
        string label = "dense:" + string.Join('+', names);
        Matrix m = _half
            ? new Matrix(null, _vk.Allocate<Half>((n + 3) / 4 * 4, label), rows, cols)   // whole 8-byte words
            : new Matrix(_vk.Allocate<float>(n, label), null, rows, cols);
        _uploads.Add((names, m));
        return m;
    }

    /// <summary>Copies every weight from the arena to the device (after an optimizer step); returns the seconds it took.</summary>
    public double Refresh()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Half[] staging = [];
        foreach (var (names, buffer) in _uploads)
        {
            long offset = 0;
            foreach (string name in names)
            {
                var source = _weights.Arena.Span(name);
                switch (buffer)
                {
                    case DeviceBuffer<float> v: v.Write(source, offset); break;
                    case Matrix { F32: { } f }: f.Write(source, offset); break;
                    case Matrix { F16: { } f }:
                        if (staging.Length < source.Length) staging = new Half[source.Length];
                        for (int i = 0; i < source.Length; i++) staging[i] = (Half)source[i];
                        f.Write(staging.AsSpan(0, source.Length), offset);
                        break;
                }
                offset += source.Length;
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
        Project(_headNormed!, rows, h, _head, null, _logits!, accumulate: false);
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
            e.Project(e._headNormed!, rows.Length, e._spec.HiddenSize, e._head, null, logits, accumulate: false);
        }

        public DeviceBuffer<float> Q => e._q!;       // [T, Hq·Hd] after RoPE
        public DeviceBuffer<float> K => e._k!;       // [T, Hkv·Hd] after RoPE
        public DeviceBuffer<float> V => e._v!;       // [T, Hkv·Hd]
        public DeviceBuffer<float> Attended => e._attended!;   // [T, Hq·Hd], written by the attention kernel
    }

    // ---- the ops of a layer ----

    /// <summary>
    /// RMSNorm, one q/k/v projection over the concatenated matrix, then one dispatch that rotates q and k and splits
    /// the fused rows into the q, k and v buffers the attention and the KV append read: 3 dispatches.
    /// </summary>
    private void BeforeAttention(Layer w)
    {
        int t = _tokens, h = _spec.HiddenSize;
        _vk.RmsNorm(_x!, w.InputNorm, t, h, (float)_spec.RmsEps, _h!);
        Project(_h!, t, h, w.Wqkv, w.Bqkv, _qkv!, accumulate: false);
        _vk.RopeSplit(_qkv!, t, _spec.NumHeads, _spec.NumKvHeads, _spec.HeadDim, _positions.AsSpan(0, t), _cos!, _sin!, _q!, _k!, _v!);
    }

    /// <summary>Output projection with the residual, RMSNorm, one gate/up projection, SwiGLU in place, down projection with the residual: 5 dispatches.</summary>
    private void AfterAttention(Layer w)
    {
        int t = _tokens, h = _spec.HiddenSize, ff = _spec.IntermediateSize;
        Project(_attended!, t, w.Wo.Cols, w.Wo, w.Bo, _x!, accumulate: true);   // residual fused
        _vk.RmsNorm(_x!, w.PostNorm, t, h, (float)_spec.RmsEps, _h!);
        Project(_h!, t, h, w.WgateUp, w.BgateUp, _gateUp!, accumulate: false);
        _vk.SwiGluFused(_gateUp!, t, ff);
        Project(_gateUp!, t, 2 * ff, w.Wd, w.Bd, _x!, accumulate: true);       // reads the gate columns; residual fused
    }

    /// <summary>y[t, :] (+)= x[t, :W.Cols]·Wᵀ (+ bias), x rows <paramref name="xStride"/> apart, y dense [tokens, W.Rows].</summary>
    private void Project(DeviceBuffer<float> x, int tokens, int xStride, Matrix w, DeviceBuffer<float>? bias, DeviceBuffer<float> y, bool accumulate)
    {
        if (w.F32 is { } f) _vk.Project(x, tokens, w.Cols, xStride, f, w.Rows, bias, y, w.Rows, 0, accumulate);
        else _vk.Project(x, tokens, w.Cols, xStride, w.F16!, w.Rows, bias, y, w.Rows, 0, accumulate);
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
        _qkv = _vk.Allocate<float>((long)capacity * (qw + 2 * kvw), "dense.qkv");
        _q = _vk.Allocate<float>((long)capacity * qw, "dense.q");
        _k = _vk.Allocate<float>((long)capacity * kvw, "dense.k");
        _v = _vk.Allocate<float>((long)capacity * kvw, "dense.v");
        _attended = _vk.Allocate<float>((long)capacity * qw, "dense.attended");
        _gateUp = _vk.Allocate<float>((long)capacity * 2 * ff, "dense.gate-up");
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

    /// <summary>
    /// Positions the RoPE tables hold at first (or the context limit, if shorter): a growth writes the tables and so
    /// waits for the recorded work, an extra submit, so typical generation lengths should need none.
    /// </summary>
    private const int InitialRopePositions = 2048;

    /// <summary>cos/sin tables [positions, Hd] as <see cref="CpuDense.RopeTable"/> rounds them (the CPU executors' values), grown by doubling up to the context.</summary>
    private void GrowRope(int needed)
    {
        int positions = Math.Min(Math.Max(needed, Math.Max(InitialRopePositions, 2 * _ropePositions)), Math.Max(_maxContext, needed));
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
        _x?.Dispose(); _h?.Dispose(); _qkv?.Dispose(); _q?.Dispose(); _k?.Dispose(); _v?.Dispose(); _attended?.Dispose(); _gateUp?.Dispose();
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
