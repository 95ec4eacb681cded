using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>
/// The dense parts of a generation forward as ONNX graphs over a flattened ragged token batch [T, …] (no padding).
/// Each graph serves every layer: its weight inputs carry the layer-local HF names (<c>self_attn.q_proj.weight</c>,
/// …), bound per run to that layer's tensors in the weight arena. The ops are the training graph's own
/// (<see cref="DecoderTrainingGraph"/>: RMSNorm, linear, rotary embedding), so generation and training compute
/// the same function.
/// </summary>
internal static class DenseGraphs
{
    public const string X = "x", Positions = "positions", Attended = "attended";
    public const string Q = "q", K = "k", V = "v", Y = "y", Logits = "logits";
    public const string FinalNorm = "model.norm.weight";

    /// <summary>Layer-local weight names the pre-attention graph reads.</summary>
    public static IEnumerable<string> PreWeights(DecoderGraphSpec spec)
    {
        yield return "input_layernorm.weight";
        foreach (var p in new[] { "q", "k", "v" })
        {
            yield return $"self_attn.{p}_proj.weight";
            if (spec.QkvBias) yield return $"self_attn.{p}_proj.bias";
        }
    }

    /// <summary>Layer-local weight names the post-attention graph reads.</summary>
    public static IEnumerable<string> PostWeights(DecoderGraphSpec spec)
    {
        yield return "self_attn.o_proj.weight";
        if (spec.OutputBias) yield return "self_attn.o_proj.bias";
        yield return "post_attention_layernorm.weight";
        foreach (var p in new[] { "gate", "up", "down" })
        {
            yield return $"mlp.{p}_proj.weight";
            if (spec.MlpBias) yield return $"mlp.{p}_proj.bias";
        }
    }

    public const string PrePrefix = "pre.", PostPrefix = "post.";

    /// <summary>
    /// Layer 0's dense part before attention: x [T, H], positions int64 [T] → q [T, Hq·Hd] and k [T, Hkv·Hd]
    /// (RMSNorm, projection, RoPE at each token's position), v [T, Hkv·Hd]. Weights are inputs named
    /// <see cref="PrePrefix"/> + layer-local name.
    /// </summary>
    public static byte[] Pre(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("dense_pre_attention");
        var pre = DeclareWeights(g, spec, PreWeights(spec), type, PrePrefix);
        var x = g.Input(X, type, "T", spec.HiddenSize);
        var positions = g.Input(Positions, ElementType.Int64, "T");
        OutputQkv(g, spec, PreBody(g, spec, pre, x, positions));
        return g.ToBytes();
    }

    /// <summary>
    /// Layer l's dense part after attention fused with layer l + 1's before it (one ONNX Runtime call per layer):
    /// x [T, H], attended [T, Hq·Hd], positions [T] → y [T, H] (the new residual stream) and q, k, v of layer l + 1.
    /// Weights: <see cref="PostPrefix"/> + layer l's local names, <see cref="PrePrefix"/> + layer l + 1's.
    /// </summary>
    public static byte[] PostPre(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("dense_post_pre_attention");
        var post = DeclareWeights(g, spec, PostWeights(spec), type, PostPrefix);
        var pre = DeclareWeights(g, spec, PreWeights(spec), type, PrePrefix);
        var x = g.Input(X, type, "T", spec.HiddenSize);
        var attended = g.Input(Attended, type, "T", spec.NumHeads * spec.HeadDim);
        var positions = g.Input(Positions, ElementType.Int64, "T");
        var y = PostBody(g, spec, post, x, attended);
        g.Output(y, Y);
        OutputQkv(g, spec, PreBody(g, spec, pre, y, positions));
        return g.ToBytes();
    }

    /// <summary>The last layer's dense part after attention: x [T, H], attended [T, Hq·Hd] → y [T, H].</summary>
    public static byte[] Post(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("dense_post_attention");
        var post = DeclareWeights(g, spec, PostWeights(spec), type, PostPrefix);
        var x = g.Input(X, type, "T", spec.HiddenSize);
        var attended = g.Input(Attended, type, "T", spec.NumHeads * spec.HeadDim);
        g.Output(PostBody(g, spec, post, x, attended), Y);
        return g.ToBytes();
    }

    private static void OutputQkv(GraphBuilder g, DecoderGraphSpec spec, (Value Q, Value K, Value V) qkv)
    {
        g.Output(qkv.Q, Q);
        g.Output(qkv.K, K);
        g.Output(qkv.V, V);
    }

    /// <summary>RMSNorm, q/k/v projections, RoPE (the training graph's ops).</summary>
    private static (Value Q, Value K, Value V) PreBody(GraphBuilder g, DecoderGraphSpec spec, Dictionary<string, Value> v, Value x, Value positions)
    {
        var (cos, sin) = DecoderTrainingGraph.RopeTables(g, spec, g.Unsqueeze(positions, 1, 2), x.Type, cast: true); // [T, 1, Hd]
        var h = RmsNorm(g, x, v["input_layernorm.weight"], spec.RmsEps);
        var hT = g.Transpose(h, 1, 0);
        var q = Project(g, hT, v, "self_attn.q_proj", spec.QkvBias);
        var k = Project(g, hT, v, "self_attn.k_proj", spec.QkvBias);
        var val = Project(g, hT, v, "self_attn.v_proj", spec.QkvBias);
        q = g.Reshape(DecoderTrainingGraph.Rope(g, g.Reshape(q, 0, spec.NumHeads, spec.HeadDim), cos, sin, spec.HeadDim), 0, spec.NumHeads * spec.HeadDim);
        k = g.Reshape(DecoderTrainingGraph.Rope(g, g.Reshape(k, 0, spec.NumKvHeads, spec.HeadDim), cos, sin, spec.HeadDim), 0, spec.NumKvHeads * spec.HeadDim);
        return (q, k, val);
    }

    /// <summary>Output projection and residual, RMSNorm, SwiGLU MLP and residual.</summary>
    private static Value PostBody(GraphBuilder g, DecoderGraphSpec spec, Dictionary<string, Value> v, Value x, Value attended)
    {
        x = g.Add(x, Project(g, g.Transpose(attended, 1, 0), v, "self_attn.o_proj", spec.OutputBias));
        var hT = g.Transpose(RmsNorm(g, x, v["post_attention_layernorm.weight"], spec.RmsEps), 1, 0);
        var gateT = g.Silu(ProjectTransposed(g, hT, v, "mlp.gate_proj", spec.MlpBias));   // [I, T]
        var upT = ProjectTransposed(g, hT, v, "mlp.up_proj", spec.MlpBias);
        return g.Add(x, Project(g, g.Mul(gateT, upT), v, "mlp.down_proj", spec.MlpBias));
    }

    /// <summary>
    /// RMSNorm as x / √(mean(x²) + ε) · w with x² written as Pow(x, 2): the pattern ONNX Runtime's optimizer fuses into
    /// one SimplifiedLayerNormalization node (the training graphs' x·x form stays six nodes). Same values.
    /// </summary>
    private static Value RmsNorm(GraphBuilder g, Value x, Value weight, double eps)
    {
        var meanSquare = g.ReduceMean(g.Pow(x, g.Scalar(2.0, x.Type)), new[] { -1 });
        return g.Mul(g.Div(x, g.Sqrt(g.Add(meanSquare, g.Scalar(eps, x.Type)))), weight);
    }

    /// <summary>
    /// xᵀ [in, T] → x·Wᵀ [T, out], computed as (W·xᵀ)ᵀ so that the weight ([out, in], the Hugging Face layout the
    /// training graphs share) is MatMul's first operand and is never transposed or packed per run; only the small
    /// activations are. Written as MatMul(x, Transpose(W)), ONNX Runtime's optimizer folded some transposes into
    /// FusedMatMul but left o_proj's and down_proj's as Transpose nodes that copied both weights on every run (320 µs
    /// of a one-token step in a profile, more than all its arithmetic).
    /// </summary>
    private static Value Project(GraphBuilder g, Value xT, Dictionary<string, Value> v, string name, bool bias)
    {
        var y = g.Transpose(g.MatMul(v[name + ".weight"], xT), 1, 0);
        return bias ? g.Add(y, v[name + ".bias"]) : y;
    }

    /// <summary>xᵀ [in, T] → W·xᵀ [out, T] (plus the bias as a column): a projection kept transposed for the next op.</summary>
    private static Value ProjectTransposed(GraphBuilder g, Value xT, Dictionary<string, Value> v, string name, bool bias)
    {
        var y = g.MatMul(v[name + ".weight"], xT);
        return bias ? g.Add(y, g.Unsqueeze(v[name + ".bias"], 1)) : y;
    }

    /// <summary>x [R, H] (the rows that need logits) → logits [R, V]: final RMSNorm and LM head.</summary>
    public static byte[] Head(DecoderGraphSpec spec, ElementType type, string headWeight)
    {
        var g = new GraphBuilder("lm_head");
        var norm = g.Input(FinalNorm, type, spec.HiddenSize);
        var head = g.Input(headWeight, type, spec.VocabSize, spec.HiddenSize);
        var x = g.Input(X, type, "R", spec.HiddenSize);
        var h = RmsNorm(g, x, norm, spec.RmsEps);
        g.Output(g.Transpose(g.MatMul(head, g.Transpose(h, 1, 0)), 1, 0), Logits);   // (E·hᵀ)ᵀ: the [V, H] head is never transposed per run
        return g.ToBytes();
    }

    /// <summary>Declares layer-local weights as inputs named <paramref name="prefix"/> + name; returns them by local name.</summary>
    private static Dictionary<string, Value> DeclareWeights(GraphBuilder g, DecoderGraphSpec spec, IEnumerable<string> names, ElementType type, string prefix)
    {
        var shapes = spec.Tensors().Where(t => t.Name.StartsWith("model.layers.0.", StringComparison.Ordinal))
            .ToDictionary(t => t.Name["model.layers.0.".Length..], t => t.Shape);
        var v = new Dictionary<string, Value>();
        foreach (var name in names) v[name] = g.Input(prefix + name, type, shapes[name].Select(Dim.Of).ToArray());
        return v;
    }
}
