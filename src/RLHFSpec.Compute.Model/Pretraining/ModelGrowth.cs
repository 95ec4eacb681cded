using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// Function-preserving growth of a trained Llama-family decoder (Net2Net-style): a wider and deeper model whose
/// logits equal the source's up to float rounding, to be fine-tuned from there instead of trained from scratch.
/// <list type="bullet">
/// <item>Widening by <see cref="GrowthFactors.Width"/> = k: the residual stream becomes k copies of itself
/// (unit <c>j·H + i</c> holds unit <c>i</c>). Copies keep mean(x²), so every RMSNorm over the wider vector gives the
/// copies of the narrow result and norm weights are copied as they are. Heads are duplicated whole (k·heads query and
/// k·kv-heads KV heads, head_dim unchanged), so RoPE and the 1/√head_dim scale are untouched and query head
/// <c>j·nh + h</c> still reads KV head <c>j·nkv + h/g</c>, a copy of the head it read before. The MLP's intermediate
/// units are copied <see cref="GrowthFactors.Intermediate"/> times.</item>
/// <item>A matrix that reads a copied vector splits each weight over the copies with random shares that sum to one
/// (w·(1/k + ε_j), Σ_j ε_j = 0), so its output is unchanged but the copies get different gradients and can diverge
/// when fine-tuned (plain w/k would keep them identical for ever). With tied embeddings the LM head reads all k
/// copies, so the final norm's weight is split the same way (its output feeds only the head).</item>
/// <item>Deepening to <see cref="GrowthFactors.Layers"/>: new layers are inserted evenly between the old ones, each a copy
/// of the layer before it with its output projections (o_proj, down_proj and their biases) zero, so it adds nothing
/// to the residual stream until fine-tuning moves it.</item>
/// <item>Fewer layers than the source (width and intermediate factors 1 only): a layer-dropped copy, the source's
/// layers at evenly spread indices, first and last kept, with the source's embedding, final norm and head (as
/// self-speculative and early-exit drafts are made). This one is not function-preserving: it is a start for a draft
/// that is then distilled from its teacher.</item>
/// </list>
/// </summary>
public static class ModelGrowth
{
    /// <summary>How much to grow: width copies of the residual stream and heads, copies of MLP units, total layers.</summary>
    public sealed record GrowthFactors(int Width, int Intermediate, int Layers)
    {
        public void Validate(ModelConfig source)
        {
            if (Width < 1) throw new ArgumentException($"growth: width factor must be >= 1, got {Width}");
            if (Intermediate < 1) throw new ArgumentException($"growth: intermediate factor must be >= 1, got {Intermediate}");
            if (Layers < 1) throw new ArgumentException($"growth: layers must be >= 1, got {Layers}");
            if (Layers < source.NumHiddenLayers && (Width != 1 || Intermediate != 1))
                throw new ArgumentException($"growth: layers {Layers} < the source's {source.NumHiddenLayers} (a layer-dropped copy) needs width and intermediate factors 1, got {Width} and {Intermediate}");
        }
    }

    /// <summary>The grown config: hidden, heads, KV heads, intermediate and layers multiplied; head_dim kept.</summary>
    public static ModelConfig GrownConfig(ModelConfig source, GrowthFactors factors)
    {
        ArgumentNullException.ThrowIfNull(source);
        factors.Validate(source);
        return source with
        {
            HiddenSize = source.HiddenSize * factors.Width,
            NumAttentionHeads = source.NumAttentionHeads * factors.Width,
            NumKeyValueHeads = source.NumKeyValueHeads * factors.Width,
            HeadDim = source.HeadDim,
            IntermediateSize = source.IntermediateSize * factors.Intermediate,
            NumHiddenLayers = factors.Layers,
        };
    }

    /// <summary>
    /// Which source layer each grown layer copies, and whether it is new (output projections zero): the source
    /// layers in order, with the new ones spread evenly after them. With fewer layers than the source, the kept
    /// source layers at evenly spread indices, the first and (from 2 layers) the last among them.
    /// </summary>
    public static IReadOnlyList<(int Source, bool IsNew)> LayerPlan(int sourceLayers, int layers)
    {
        var plan = new List<(int, bool)>(layers);
        if (layers < sourceLayers)
        {
            for (int l = 0; l < layers; l++)
                plan.Add((layers == 1 ? 0 : (int)Math.Round((double)l * (sourceLayers - 1) / (layers - 1)), false));
            return plan;
        }
        int extra = layers - sourceLayers;
        for (int l = 0; l < sourceLayers; l++)
        {
            plan.Add((l, false));
            // Layer l is followed by the new layers whose share of `extra` falls in its slot.
            int before = (int)((long)extra * l / sourceLayers), after = (int)((long)extra * (l + 1) / sourceLayers);
            for (int n = before; n < after; n++) plan.Add((l, true));
        }
        return plan;
    }

    /// <summary>
    /// The grown weights of <paramref name="source"/> (see the class remarks). <paramref name="seed"/> draws the
    /// symmetry-breaking shares; <paramref name="splitNoise"/> is their spread (ε_j uniform in ±noise/k, centred so
    /// they sum to zero; 0 gives the plain w/k split).
    /// </summary>
    public static TransformerWeights Grow(TransformerWeights source, GrowthFactors factors, int seed, double splitNoise = 0.5)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (splitNoise is < 0 or >= 1) throw new ArgumentException($"growth: split noise must be in [0, 1), got {splitNoise}");
        var sc = source.Config;
        var config = GrownConfig(sc, factors);
        var grown = new TransformerWeights(config);
        try
        {
            var g = new Grower(sc, factors, new Random(seed), splitNoise);
            var src = source.Arena;
            var dst = grown.Arena;
            // Embedding [V, H]: each row's units copied (the input side of the residual stream).
            g.Matrix(src.Span("model.embed_tokens.weight"), dst.Span("model.embed_tokens.weight"), sc.VocabSize, 1, sc.HiddenSize, g.W, split: false);
            var plan = LayerPlan(sc.NumHiddenLayers, factors.Layers);
            for (int l = 0; l < plan.Count; l++)
            {
                var (s, isNew) = plan[l];
                string sp = $"model.layers.{s}.", dp = $"model.layers.{l}.";
                g.Vector(src.Span(sp + "input_layernorm.weight"), dst.Span(dp + "input_layernorm.weight"), g.W, split: false);
                g.Vector(src.Span(sp + "post_attention_layernorm.weight"), dst.Span(dp + "post_attention_layernorm.weight"), g.W, split: false);
                int hd = sc.HeadDim, q = sc.NumAttentionHeads * hd, kv = sc.NumKeyValueHeads * hd;
                g.Matrix(src.Span(sp + "self_attn.q_proj.weight"), dst.Span(dp + "self_attn.q_proj.weight"), q, g.W, sc.HiddenSize, g.W, split: true);
                g.Matrix(src.Span(sp + "self_attn.k_proj.weight"), dst.Span(dp + "self_attn.k_proj.weight"), kv, g.W, sc.HiddenSize, g.W, split: true);
                g.Matrix(src.Span(sp + "self_attn.v_proj.weight"), dst.Span(dp + "self_attn.v_proj.weight"), kv, g.W, sc.HiddenSize, g.W, split: true);
                g.Matrix(src.Span(sp + "self_attn.o_proj.weight"), dst.Span(dp + "self_attn.o_proj.weight"), sc.HiddenSize, g.W, q, g.W, split: true);
                int inter = sc.IntermediateSize;
                g.Matrix(src.Span(sp + "mlp.gate_proj.weight"), dst.Span(dp + "mlp.gate_proj.weight"), inter, factors.Intermediate, sc.HiddenSize, g.W, split: true);
                g.Matrix(src.Span(sp + "mlp.up_proj.weight"), dst.Span(dp + "mlp.up_proj.weight"), inter, factors.Intermediate, sc.HiddenSize, g.W, split: true);
                g.Matrix(src.Span(sp + "mlp.down_proj.weight"), dst.Span(dp + "mlp.down_proj.weight"), sc.HiddenSize, g.W, inter, factors.Intermediate, split: true);
                if (sc.HasQkvBias)
                {
                    g.Vector(src.Span(sp + "self_attn.q_proj.bias"), dst.Span(dp + "self_attn.q_proj.bias"), g.W, split: false);
                    g.Vector(src.Span(sp + "self_attn.k_proj.bias"), dst.Span(dp + "self_attn.k_proj.bias"), g.W, split: false);
                    g.Vector(src.Span(sp + "self_attn.v_proj.bias"), dst.Span(dp + "self_attn.v_proj.bias"), g.W, split: false);
                }
                if (sc.HasOutputBias) g.Vector(src.Span(sp + "self_attn.o_proj.bias"), dst.Span(dp + "self_attn.o_proj.bias"), g.W, split: false);
                if (sc.HasMlpBias)
                {
                    g.Vector(src.Span(sp + "mlp.gate_proj.bias"), dst.Span(dp + "mlp.gate_proj.bias"), factors.Intermediate, split: false);
                    g.Vector(src.Span(sp + "mlp.up_proj.bias"), dst.Span(dp + "mlp.up_proj.bias"), factors.Intermediate, split: false);
                    g.Vector(src.Span(sp + "mlp.down_proj.bias"), dst.Span(dp + "mlp.down_proj.bias"), g.W, split: false);
                }
                if (isNew)
                    foreach (var name in new[] { "self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight", "mlp.down_proj.bias" })
                        if (dst.Names.Contains(dp + name)) dst.Span(dp + name).Clear();
            }
            if (sc.TieWordEmbeddings)
                g.Vector(src.Span("model.norm.weight"), dst.Span("model.norm.weight"), g.W, split: true);
            else
            {
                g.Vector(src.Span("model.norm.weight"), dst.Span("model.norm.weight"), g.W, split: false);
                g.Matrix(src.Span("lm_head.weight"), dst.Span("lm_head.weight"), sc.VocabSize, 1, sc.HiddenSize, g.W, split: true);
            }
            return grown;
        }
        catch
        {
            grown.Dispose();
            throw;
        }
    }

    private sealed class Grower(ModelConfig source, GrowthFactors factors, Random random, double noise)
    {
        public int W => factors.Width;

        /// <summary>
        /// Random shares for <paramref name="k"/> copies: 1/k + ε_j with Σ ε_j = 0 (exactly 1/k each when noise is 0
        /// or k is 1).
        /// </summary>
        private void Shares(Span<double> shares)
        {
            int k = shares.Length;
            if (k == 1 || noise == 0) { shares.Fill(1.0 / k); return; }
            double mean = 0;
            for (int j = 0; j < k; j++) { shares[j] = (random.NextDouble() * 2 - 1) * noise / k; mean += shares[j]; }
            mean /= k;
            for (int j = 0; j < k; j++) shares[j] = 1.0 / k + shares[j] - mean;
        }

        /// <summary>
        /// dst [rk·rows, ck·cols] from src [rows, cols]: row block r·rows+i is row i (rows copied), column block
        /// c·cols+j is column j, times a share per (element, copy) when the columns are split (they read copies), else
        /// as is.
        /// </summary>
        public void Matrix(ReadOnlySpan<float> src, Span<float> dst, int rows, int rk, int cols, int ck, bool split)
        {
            if (src.Length != (long)rows * cols) throw new InvalidOperationException($"growth: source tensor of {src.Length} elements, expected {rows}×{cols} ({source.ModelType})");
            int dcols = cols * ck;
            if (dst.Length != (long)rows * rk * dcols) throw new InvalidOperationException($"growth: grown tensor of {dst.Length} elements, expected {rows * rk}×{dcols}");
            Span<double> shares = stackalloc double[ck];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                {
                    float w = src[i * cols + j];
                    if (split) Shares(shares); else shares.Fill(1.0);
                    // Every copy of row i gets the same shares, so the copies of an output unit stay equal.
                    for (int r = 0; r < rk; r++)
                        for (int c = 0; c < ck; c++)
                            dst[(r * rows + i) * dcols + c * cols + j] = (float)(w * shares[c]);
                }
        }

        /// <summary>dst [k·n] from src [n]: copies, or split with shares summing to one.</summary>
        public void Vector(ReadOnlySpan<float> src, Span<float> dst, int k, bool split)
        {
            int n = src.Length;
            if (dst.Length != n * k) throw new InvalidOperationException($"growth: grown vector of {dst.Length} elements, expected {n * k}");
            Span<double> shares = stackalloc double[k];
            for (int i = 0; i < n; i++)
            {
                if (split) Shares(shares); else shares.Fill(1.0);
                for (int c = 0; c < k; c++) dst[c * n + i] = (float)(src[i] * shares[c]);
            }
        }
    }
}
