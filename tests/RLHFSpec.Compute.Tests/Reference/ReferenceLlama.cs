namespace RLHFSpec.Compute.Tests.Reference;

/// <summary>
/// An independent, deliberately plain forward pass of a Llama/Qwen2-family decoder in double precision, straight
/// from the Hugging Face modelling code's definitions: token embedding, per layer RMSNorm → q/k/v projections
/// (optional biases, as Qwen2) → rotary embedding (rotate-half convention) → causal grouped-query attention →
/// output projection → residual → RMSNorm → SwiGLU MLP → residual; final RMSNorm; LM head (tied to the embedding or
/// not). Weights by their HF names, Linear weights [out, in] (y = x·Wᵀ). The model runtime is tested against it.
/// </summary>
public sealed class ReferenceLlama(ReferenceLlama.Dims dims, Func<string, float[]> weight)
{
    public sealed record Dims(int Vocab, int Hidden, int Intermediate, int Layers, int Heads, int KvHeads, int HeadDim,
        double RmsEps, double RopeTheta, bool TiedEmbeddings, bool AttentionBias);

    /// <summary>Logits [tokens.Length, Vocab] of every position of one sequence starting at position 0.</summary>
    public double[][] Forward(IReadOnlyList<int> tokens)
    {
        int n = tokens.Count, h = dims.Hidden, hd = dims.HeadDim;
        var embed = weight("model.embed_tokens.weight");
        var x = new double[n][];
        for (int t = 0; t < n; t++) x[t] = Enumerable.Range(0, h).Select(i => (double)embed[(long)tokens[t] * h + i]).ToArray();

        for (int l = 0; l < dims.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var normed = x.Select(r => RmsNorm(r, weight(p + "input_layernorm.weight"))).ToArray();
            var q = normed.Select(r => Linear(r, weight(p + "self_attn.q_proj.weight"), Bias(p + "self_attn.q_proj.bias"), dims.Heads * hd)).ToArray();
            var k = normed.Select(r => Linear(r, weight(p + "self_attn.k_proj.weight"), Bias(p + "self_attn.k_proj.bias"), dims.KvHeads * hd)).ToArray();
            var v = normed.Select(r => Linear(r, weight(p + "self_attn.v_proj.weight"), Bias(p + "self_attn.v_proj.bias"), dims.KvHeads * hd)).ToArray();
            for (int t = 0; t < n; t++)
            {
                for (int head = 0; head < dims.Heads; head++) Rope(q[t], head * hd, t);
                for (int head = 0; head < dims.KvHeads; head++) Rope(k[t], head * hd, t);
            }
            var attended = new double[n][];
            int group = dims.Heads / dims.KvHeads;
            for (int t = 0; t < n; t++)
            {
                attended[t] = new double[dims.Heads * hd];
                for (int head = 0; head < dims.Heads; head++)
                {
                    int kvHead = head / group;
                    var scores = new double[t + 1];
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += q[t][head * hd + i] * k[s][kvHead * hd + i];
                        scores[s] = dot / Math.Sqrt(hd);
                    }
                    double max = scores.Max(), sum = scores.Sum(sc => Math.Exp(sc - max));
                    for (int s = 0; s <= t; s++)
                    {
                        double w = Math.Exp(scores[s] - max) / sum;
                        for (int i = 0; i < hd; i++) attended[t][head * hd + i] += w * v[s][kvHead * hd + i];
                    }
                }
            }
            for (int t = 0; t < n; t++)
            {
                var o = Linear(attended[t], weight(p + "self_attn.o_proj.weight"), null, h);
                for (int i = 0; i < h; i++) x[t][i] += o[i];
                var m = RmsNorm(x[t], weight(p + "post_attention_layernorm.weight"));
                var gate = Linear(m, weight(p + "mlp.gate_proj.weight"), null, dims.Intermediate);
                var up = Linear(m, weight(p + "mlp.up_proj.weight"), null, dims.Intermediate);
                var act = gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i]).ToArray();
                var down = Linear(act, weight(p + "mlp.down_proj.weight"), null, h);
                for (int i = 0; i < h; i++) x[t][i] += down[i];
            }
        }
        var head_ = weight(dims.TiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight");
        return x.Select(r => Linear(RmsNorm(r, weight("model.norm.weight")), head_, null, dims.Vocab)).ToArray();
    }

    private float[]? Bias(string name) => dims.AttentionBias ? weight(name) : null;

    private double[] RmsNorm(double[] x, float[] w)
    {
        double mean = x.Sum(v => v * v) / x.Length;
        double scale = 1 / Math.Sqrt(mean + dims.RmsEps);
        return x.Select((v, i) => v * scale * w[i]).ToArray();
    }

    private static double[] Linear(double[] x, float[] w, float[]? bias, int outputs)
    {
        var y = new double[outputs];
        for (int o = 0; o < outputs; o++)
        {
            double s = bias is null ? 0 : bias[o];
            for (int i = 0; i < x.Length; i++) s += x[i] * w[(long)o * x.Length + i];
            y[o] = s;
        }
        return y;
    }

    /// <summary>HF rotary embedding on one head's slice: x·cos + rotate_half(x)·sin, frequencies θ^(−2i/d).</summary>
    private void Rope(double[] x, int offset, int position)
    {
        int hd = dims.HeadDim, half = hd / 2;
        var rotated = new double[hd];
        for (int i = 0; i < half; i++)
        {
            double angle = position * Math.Pow(dims.RopeTheta, -2.0 * i / hd);
            double c = Math.Cos(angle), s = Math.Sin(angle);
            double a = x[offset + i], b = x[offset + i + half];
            rotated[i] = a * c - b * s;
            rotated[i + half] = b * c + a * s;
        }
        Array.Copy(rotated, 0, x, offset, hd);
    }
}
