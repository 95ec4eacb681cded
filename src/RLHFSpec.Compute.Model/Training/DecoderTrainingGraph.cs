using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Model.Training;

/// <summary>
/// Whole-model graphs for training: a Llama/Qwen2 decoder over whole padded sequences [B, T] (no KV cache),
/// token log-probs of given targets, and the RLHF policy loss with its gradients (autodiff) for every weight.
/// Weights are graph inputs named and shaped as in Hugging Face checkpoints (linear weights [out, in], y = x·Wᵀ),
/// so the same host arrays the generation graphs read feed training too.
/// </summary>
/// <remarks>
/// Sequence inputs: <c>input_ids</c> int64 [B, T]; <c>position_ids</c> int64 [B, T] (RoPE angles are computed in
/// the graph from them); <c>attention_mask</c> [B, T] of the model's float type, 1 for real tokens, 0 for padding.
/// Query i may attend to key j when j is a real token and position_j ≤ position_i; with positions counting real
/// tokens (left or right padding) this is the causal mask over real tokens.
/// </remarks>
public static class DecoderTrainingGraph
{
    public const string InputIds = "input_ids", PositionIds = "position_ids", AttentionMask = "attention_mask";
    public const string Targets = "targets", OldLogProbs = "old_logprobs", RefLogProbs = "ref_logprobs";
    public const string Advantages = "advantages", LossMask = "loss_mask", TeacherLogits = "teacher_logits";
    public const string Loss = "loss", LogProbs = "logprobs", GradientPrefix = "grad_", LogitsOutput = "logits";

    /// <summary>Large negative score for masked keys (finite so that a fully masked padding row stays finite).</summary>
    private const double MaskedScore = -1e9;

    /// <summary>Declares the weights (HF names) and the three sequence inputs; returns them by name.</summary>
    public static Dictionary<string, Value> DeclareInputs(GraphBuilder g, DecoderGraphSpec spec, ElementType type) =>
        DeclareInputs(g, spec, spec.Tensors(), type);

    /// <summary>Declares the given weights (a model with another head, e.g. a value model) and the three sequence inputs.</summary>
    public static Dictionary<string, Value> DeclareInputs(GraphBuilder g, DecoderGraphSpec spec, IEnumerable<(string Name, long[] Shape)> weights, ElementType type)
    {
        spec.Validate();
        var v = new Dictionary<string, Value>();
        foreach (var (name, shape) in weights) v[name] = g.Input(name, type, shape.Select(Dim.Of).ToArray());
        v[InputIds] = g.Input(InputIds, ElementType.Int64, "B", "T");
        v[PositionIds] = g.Input(PositionIds, ElementType.Int64, "B", "T");
        v[AttentionMask] = g.Input(AttentionMask, type, "B", "T");
        return v;
    }

    /// <summary>Logits [B, T, V] of every position.</summary>
    public static Value Logits(GraphBuilder g, DecoderGraphSpec spec, IReadOnlyDictionary<string, Value> v)
    {
        var head = spec.TiedEmbeddings ? v["model.embed_tokens.weight"] : v["lm_head.weight"];
        return g.MatMul(Hidden(g, spec, v), g.Transpose(head, 1, 0));
    }

    /// <summary>The trunk: hidden states [B, T, H] of every position after the final norm (what a head reads).</summary>
    public static Value Hidden(GraphBuilder g, DecoderGraphSpec spec, IReadOnlyDictionary<string, Value> v)
    {
        var embed = v["model.embed_tokens.weight"];
        var type = embed.Type;
        var x = g.Gather(embed, v[InputIds]);                                            // [B, T, H]
        var (cos, sin) = RopeTables(g, spec, v[PositionIds], type);                      // [B, 1, T, Hd]
        var allowed = AttentionAllowed(g, v[PositionIds], v[AttentionMask]);             // [B, 1, T, T]
        for (int l = 0; l < spec.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var h = RmsNorm(g, x, v[p + "input_layernorm.weight"], spec.RmsEps);
            var q = Heads(g, Linear(g, h, v, p + "self_attn.q_proj", spec.QkvBias), spec.NumHeads, spec.HeadDim);
            var k = Heads(g, Linear(g, h, v, p + "self_attn.k_proj", spec.QkvBias), spec.NumKvHeads, spec.HeadDim);
            var val = Heads(g, Linear(g, h, v, p + "self_attn.v_proj", spec.QkvBias), spec.NumKvHeads, spec.HeadDim);
            q = Rope(g, q, cos, sin, spec.HeadDim);
            k = Rope(g, k, cos, sin, spec.HeadDim);
            k = RepeatKv(g, k, spec);
            val = RepeatKv(g, val, spec);
            var scores = g.Mul(g.MatMul(q, g.Transpose(k, 0, 1, 3, 2)), g.Scalar(1 / Math.Sqrt(spec.HeadDim), type));
            var probs = g.Softmax(g.Where(allowed, scores, g.Scalar(MaskedScore, type)));  // [B, Hq, T, T]
            var attended = g.Reshape(g.Transpose(g.MatMul(probs, val), 0, 2, 1, 3), 0, 0, spec.NumHeads * spec.HeadDim);
            x = g.Add(x, Linear(g, attended, v, p + "self_attn.o_proj", spec.OutputBias));
            var h2 = RmsNorm(g, x, v[p + "post_attention_layernorm.weight"], spec.RmsEps);
            var gate = g.Silu(Linear(g, h2, v, p + "mlp.gate_proj", spec.MlpBias));
            var up = Linear(g, h2, v, p + "mlp.up_proj", spec.MlpBias);
            x = g.Add(x, Linear(g, g.Mul(gate, up), v, p + "mlp.down_proj", spec.MlpBias));
        }
        return RmsNorm(g, x, v["model.norm.weight"], spec.RmsEps);
    }

    /// <summary>
    /// A training graph: log-probs of <c>targets</c> (output <see cref="LogProbs"/>), the policy loss
    /// (<see cref="LossOps.PolicyLoss"/>, minus <paramref name="entropyCoef"/> times the policy's mean entropy over
    /// the masked positions, aggregated as the surrogate; output <see cref="Loss"/>) and d loss / d weight for every
    /// weight (outputs grad_NAME). Extra inputs: targets int64 [B, T], old_logprobs, advantages, loss_mask [B, T], and
    /// ref_logprobs [B, T] when <paramref name="klBeta"/> &gt; 0.
    /// </summary>
    public static GraphBuilder PolicyLossGraph(DecoderGraphSpec spec, ElementType type, double klBeta = 0,
        double clipLow = 0.2, double clipHigh = 0.2, LossAggregation aggregation = LossAggregation.TokenMean, double entropyCoef = 0)
    {
        if (!(entropyCoef >= 0) || !double.IsFinite(entropyCoef))
            throw new ArgumentException($"PolicyLossGraph: entropy coefficient must be a finite number >= 0, got {entropyCoef}", nameof(entropyCoef));
        var g = new GraphBuilder("policy_loss");
        var v = DeclareInputs(g, spec, type);
        var targets = g.Input(Targets, ElementType.Int64, "B", "T");
        var old = g.Input(OldLogProbs, type, "B", "T");
        var adv = g.Input(Advantages, type, "B", "T");
        var mask = g.Input(LossMask, type, "B", "T");
        var reference = klBeta > 0 ? g.Input(RefLogProbs, type, "B", "T") : null;
        var logits = Logits(g, spec, v);
        var logp = LossOps.TokenLogProbs(g, logits, targets);
        var loss = LossOps.PolicyLoss(g, logp, old, adv, mask, reference, klBeta, clipLow, clipHigh, aggregation);
        if (entropyCoef > 0)
        {
            // Entropy bonus: minimising loss − c·H(π) keeps the policy from collapsing early (PPO's c2 term).
            var entropy = LossOps.Aggregate(g, LossOps.EntropyPerToken(g, logits), mask, aggregation);
            loss = g.Sub(loss, g.Mul(entropy, g.Scalar(entropyCoef, type)));
        }
        g.Output(logp, LogProbs);
        g.Output(loss, Loss);
        Autodiff.Gradients(g, loss, spec.Tensors().Select(t => v[t.Name]).ToArray(), GradientPrefix);
        return g;
    }

    /// <summary>
    /// A language-model (pretraining / supervised) graph: log-probs of <c>targets</c> (output <see cref="LogProbs"/>),
    /// the loss = masked mean over tokens of −log p(target) under <c>loss_mask</c> (output <see cref="Loss"/>; an
    /// all-zero mask gives 0) and d loss / d weight for every weight (outputs grad_NAME). Extra inputs: targets int64
    /// [B, T] (usually input_ids shifted left by one) and loss_mask [B, T] of the model's type.
    /// </summary>
    public static GraphBuilder LanguageModelLossGraph(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("lm_loss");
        var v = DeclareInputs(g, spec, type);
        var targets = g.Input(Targets, ElementType.Int64, "B", "T");
        var mask = g.Input(LossMask, type, "B", "T");
        var logp = LossOps.TokenLogProbs(g, Logits(g, spec, v), targets);
        var loss = g.Neg(LossOps.MaskedMean(g, logp, mask));
        g.Output(logp, LogProbs);
        g.Output(loss, Loss);
        Autodiff.Gradients(g, loss, spec.Tensors().Select(t => v[t.Name]).ToArray(), GradientPrefix);
        return g;
    }

    /// <summary>
    /// A distillation graph (forward KL(teacher ‖ model) up to the teacher's entropy): extra inputs
    /// <c>teacher_logits</c> [B, T, V] and <c>loss_mask</c> [B, T]; output <see cref="Loss"/> = masked mean over tokens
    /// of −Σ_v softmax(teacher)_v · log_softmax(model)_v, and grad_NAME per weight. The draft refresh of the RLHF loop
    /// and the pretrainer's distilled drafts both train with it.
    /// </summary>
    public static GraphBuilder DistillationLossGraph(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("draft_distill");
        var v = DeclareInputs(g, spec, type);
        v[TeacherLogits] = g.Input(TeacherLogits, type, "B", "T", spec.VocabSize);
        v[LossMask] = g.Input(LossMask, type, "B", "T");
        var loss = DistillationLoss(g, spec, v);
        g.Output(loss, Loss);
        Autodiff.Gradients(g, loss, spec.Tensors().Select(t => v[t.Name]).ToArray(), GradientPrefix);
        return g;
    }

    /// <summary>The distillation loss from declared inputs (weights, sequence inputs, teacher_logits, loss_mask).</summary>
    public static Value DistillationLoss(GraphBuilder g, DecoderGraphSpec spec, IReadOnlyDictionary<string, Value> v)
    {
        var logq = g.LogSoftmax(Logits(g, spec, v));
        var p = g.Softmax(v[TeacherLogits]);
        var crossEntropy = g.Neg(g.ReduceSum(g.Mul(p, logq), new[] { -1 }, keepDims: false));    // [B, T]
        return LossOps.MaskedMean(g, crossEntropy, v[LossMask]);
    }

    /// <summary>A forward-only graph: logits [B, T, V] of every position (output <see cref="LogitsOutput"/>).</summary>
    public static GraphBuilder LogitsGraph(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("logits");
        var v = DeclareInputs(g, spec, type);
        g.Output(Logits(g, spec, v), LogitsOutput);
        return g;
    }

    internal static Value Linear(GraphBuilder g, Value x, IReadOnlyDictionary<string, Value> v, string name, bool bias)
    {
        var y = g.MatMul(x, g.Transpose(v[name + ".weight"], 1, 0));
        return bias ? g.Add(y, v[name + ".bias"]) : y;
    }

    internal static Value RmsNorm(GraphBuilder g, Value x, Value weight, double eps)
    {
        var meanSquare = g.ReduceMean(g.Mul(x, x), new[] { -1 });
        return g.Mul(g.Div(x, g.Sqrt(g.Add(meanSquare, g.Scalar(eps, x.Type)))), weight);
    }

    /// <summary>[B, T, n·Hd] → [B, n, T, Hd].</summary>
    private static Value Heads(GraphBuilder g, Value x, int heads, int headDim) =>
        g.Transpose(g.Reshape(x, 0, 0, heads, headDim), 0, 2, 1, 3);

    /// <summary>cos/sin [B, 1, T, Hd] of angle position · θ^(−2i/Hd), duplicated over both halves (rotate-half).</summary>
    private static (Value Cos, Value Sin) RopeTables(GraphBuilder g, DecoderGraphSpec spec, Value positions, ElementType type) =>
        RopeTables(g, spec, g.Unsqueeze(g.Cast(positions, type), 1, 3), type, cast: false);

    /// <summary>
    /// cos/sin of angle position · θ^(−2i/Hd) over the trailing axis (size Hd) of <paramref name="positions"/> · inv,
    /// where <paramref name="positions"/> already carries the broadcast axes (its last axis has size 1). The one
    /// place RoPE angles are computed, so training and generation graphs round identically.
    /// </summary>
    internal static (Value Cos, Value Sin) RopeTables(GraphBuilder g, DecoderGraphSpec spec, Value positions, ElementType type, bool cast)
    {
        int half = spec.HeadDim / 2;
        var inv = Enumerable.Range(0, spec.HeadDim).Select(i => Math.Pow(spec.RopeTheta, -2.0 * (i % half) / spec.HeadDim)).ToArray();
        var angles = g.Mul(cast ? g.Cast(positions, type) : positions, g.Constant(inv, new long[] { spec.HeadDim }, type));
        return (g.Cos(angles), g.Sin(angles));
    }

    internal static Value Rope(GraphBuilder g, Value x, Value cos, Value sin, int headDim)
    {
        int half = headDim / 2;
        var first = g.Slice(x, new long[] { 0 }, new long[] { half }, new[] { -1 });
        var second = g.Slice(x, new long[] { half }, new long[] { headDim }, new[] { -1 });
        return g.Add(g.Mul(x, cos), g.Mul(g.Concat(-1, g.Neg(second), first), sin));
    }

    /// <summary>[B, Hkv, T, Hd] → [B, Hq, T, Hd], each kv head repeated for its group of query heads.</summary>
    private static Value RepeatKv(GraphBuilder g, Value x, DecoderGraphSpec spec)
    {
        int group = spec.NumHeads / spec.NumKvHeads;
        if (group == 1) return x;
        var shape = g.ShapeOf(x);
        var target = g.Concat(0, g.Slice(shape, new long[] { 0 }, new long[] { 2 }, new[] { 0 }), g.Int64s(group),
            g.Slice(shape, new long[] { 2 }, new long[] { 4 }, new[] { 0 }));
        return g.Reshape(g.Expand(g.Unsqueeze(x, 2), target), 0, spec.NumHeads, -1, spec.HeadDim);
    }

    /// <summary>[B, 1, T(query), T(key)]: key is a real token and not after the query in position.</summary>
    private static Value AttentionAllowed(GraphBuilder g, Value positions, Value mask)
    {
        var keyPos = g.Unsqueeze(positions, 1);                                          // [B, 1, T]
        var queryPos = g.Unsqueeze(positions, 2);                                        // [B, T, 1]
        var causal = g.LessOrEqual(keyPos, queryPos);                                    // [B, T, T]
        var real = g.Greater(g.Unsqueeze(mask, 1), g.Scalar(0.5, mask.Type));            // [B, 1, T]
        return g.Unsqueeze(g.And(causal, real), 1);
    }
}
