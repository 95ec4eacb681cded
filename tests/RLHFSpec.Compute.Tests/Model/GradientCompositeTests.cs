using RLHFSpec.Compute.Model.Onnx;
using static RLHFSpec.Compute.Tests.Model.GradientCheck;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// A whole tiny decoder (embedding, RMSNorm, Qwen2-style q/k/v with biases, RoPE, causal grouped-query attention,
/// SwiGLU MLP, final norm, tied LM head) under a PPO-clip + k3-KL masked-mean loss, differentiated by autodiff and
/// checked against finite differences for every weight.
/// </summary>
public class GradientCompositeTests
{
    private const int B = 2, Tn = 4, H = 8, Heads = 2, KvHeads = 1, Hd = 4, V = 11, Ffn = 12;
    private const double Eps = 1e-6;

    private static Value RmsNorm(GraphBuilder g, Value x, Value w)
    {
        var ms = g.ReduceMean(g.Mul(x, x), new[] { -1 });
        return g.Mul(g.Mul(x, g.Reciprocal(g.Sqrt(g.Add(ms, g.Scalar(Eps, x.Type))))), w);
    }

    /// <summary>Rotate-half RoPE on [B, heads, T, Hd] with cos/sin tables [T, Hd].</summary>
    private static Value Rope(GraphBuilder g, Value x, Value cos, Value sin)
    {
        var first = g.Slice(x, new long[] { 0 }, new long[] { Hd / 2 }, new[] { -1 });
        var second = g.Slice(x, new long[] { Hd / 2 }, new long[] { Hd }, new[] { -1 });
        var rotated = g.Concat(-1, g.Neg(second), first);
        return g.Add(g.Mul(x, cos), g.Mul(rotated, sin));
    }

    private static Value Heads4(GraphBuilder g, Value x, int heads) =>
        g.Transpose(g.Reshape(x, 0, 0, heads, Hd), 0, 2, 1, 3); // [B, T, h·Hd] → [B, h, T, Hd]

    /// <summary>Log-probabilities of the target tokens, [B, T].</summary>
    internal static Value TokenLogp(GraphBuilder g, IReadOnlyDictionary<string, Value> v)
    {
        var x = g.Gather(v["emb"], v["ids"]);                                   // [B, T, H]
        var h = RmsNorm(g, x, v["w_in"]);
        var q = Heads4(g, g.Add(g.MatMul(h, v["wq"]), v["bq"]), Heads);          // [B, Heads, T, Hd]
        var k = Heads4(g, g.Add(g.MatMul(h, v["wk"]), v["bk"]), KvHeads);        // [B, KvHeads, T, Hd]
        var val = Heads4(g, g.Add(g.MatMul(h, v["wv"]), v["bv"]), KvHeads);
        q = Rope(g, q, v["cos"], v["sin"]);
        k = Rope(g, k, v["cos"], v["sin"]);
        // Grouped-query attention: repeat each kv head Heads/KvHeads times.
        // The target shape is built from the runtime shape, so the graph also works for symbolic B and T.
        Value Repeat(Value t)
        {
            var shape = g.ShapeOf(t);
            var target = g.Concat(0, g.Slice(shape, new long[] { 0 }, new long[] { 2 }, new[] { 0 }),
                g.Int64s(Heads / KvHeads), g.Slice(shape, new long[] { 2 }, new long[] { 4 }, new[] { 0 }));
            return g.Reshape(g.Expand(g.Unsqueeze(t, 2), target), 0, Heads, -1, Hd);
        }
        k = Repeat(k);
        val = Repeat(val);
        var scores = g.Mul(g.MatMul(q, g.Transpose(k, 0, 1, 3, 2)), g.Scalar(1 / Math.Sqrt(Hd), x.Type));
        var causal = g.Greater(v["causal"], g.Scalar(0.5, x.Type));              // [T, T]
        var p = g.Softmax(g.Where(causal, scores, g.Scalar(-1e9, x.Type)));
        var attn = g.Reshape(g.Transpose(g.MatMul(p, val), 0, 2, 1, 3), 0, 0, Heads * Hd);
        var x1 = g.Add(x, g.MatMul(attn, v["wo"]));
        var h2 = RmsNorm(g, x1, v["w_post"]);
        var mlp = g.MatMul(g.Mul(g.Silu(g.MatMul(h2, v["wg"])), g.MatMul(h2, v["wu"])), v["wd"]);
        var x2 = g.Add(x1, mlp);
        var logits = g.MatMul(RmsNorm(g, x2, v["w_final"]), g.Transpose(v["emb"], 1, 0)); // tied head
        return g.Squeeze(g.GatherElements(g.LogSoftmax(logits), v["targets"], -1), -1); // [B, T]
    }

    internal static Value Loss(GraphBuilder g, IReadOnlyDictionary<string, Value> v)
    {
        var logp = TokenLogp(g, v);
        var x = logp;
        // PPO clip: −min(r·A, clip(r, 0.8, 1.2)·A), r = exp(logp − old); k3 KL to the reference.
        var ratio = g.Exp(g.Sub(logp, v["old"]));
        var surrogate = g.Min(g.Mul(ratio, v["adv"]), g.Mul(g.Clip(ratio, 0.8, 1.2), v["adv"]));
        var d = g.Sub(v["ref"], logp);
        var kl = g.Sub(g.Sub(g.Exp(d), d), g.Scalar(1, x.Type));
        var perToken = g.Add(g.Neg(surrogate), g.Mul(kl, g.Scalar(0.1, x.Type)));
        var mask = v["mask"];
        return g.Div(g.ReduceSum(g.Mul(perToken, mask), new[] { 0, 1 }, keepDims: false),
            g.ReduceSum(mask, new[] { 0, 1 }, keepDims: false));
    }

    internal static Wrt[] Weights() => new Wrt[]
    {
        new("emb", new long[] { V, H }), new("w_in", new long[] { H }, 0.5, 1.5),
        new("wq", new long[] { H, Heads * Hd }), new("bq", new long[] { Heads * Hd }),
        new("wk", new long[] { H, KvHeads * Hd }), new("bk", new long[] { KvHeads * Hd }),
        new("wv", new long[] { H, KvHeads * Hd }), new("bv", new long[] { KvHeads * Hd }),
        new("wo", new long[] { Heads * Hd, H }), new("w_post", new long[] { H }, 0.5, 1.5),
        new("wg", new long[] { H, Ffn }), new("wu", new long[] { H, Ffn }), new("wd", new long[] { Ffn, H }),
        new("w_final", new long[] { H }, 0.5, 1.5),
    };

    internal static Dictionary<string, Tensor> Batch(int seed)
    {
        var rng = new Random(seed);
        var cos = new double[Tn * Hd];
        var sin = new double[Tn * Hd];
        for (int t = 0; t < Tn; t++)
            for (int i = 0; i < Hd; i++)
            {
                double theta = t / Math.Pow(10000, 2.0 * (i % (Hd / 2)) / Hd);
                cos[t * Hd + i] = Math.Cos(theta);
                sin[t * Hd + i] = Math.Sin(theta);
            }
        var causal = new double[Tn * Tn];
        for (int i = 0; i < Tn; i++) for (int j = 0; j <= i; j++) causal[i * Tn + j] = 1;
        return new Dictionary<string, Tensor>
        {
            ["ids"] = L(Enumerable.Range(0, B * Tn).Select(_ => (long)rng.Next(V)).ToArray(), B, Tn),
            ["targets"] = L(Enumerable.Range(0, B * Tn).Select(_ => (long)rng.Next(V)).ToArray(), B, Tn, 1),
            ["cos"] = T(cos, Tn, Hd), ["sin"] = T(sin, Tn, Hd), ["causal"] = T(causal, Tn, Tn),
            // log(1/V) ≈ −2.4: old/ref around it put the ratio on both sides of the clip range.
            ["old"] = T(Rand(rng, B * Tn, -3.2, -1.6), B, Tn), ["ref"] = T(Rand(rng, B * Tn, -3.2, -1.6), B, Tn),
            ["adv"] = T(Rand(rng, B * Tn, -1, 1), B, Tn),
            ["mask"] = T(new double[] { 0, 1, 1, 1, 0, 0, 1, 1 }, B, Tn),
        };
    }

    [Test]
    public void TinyDecoderPpoLossMatchesFiniteDifferences([Values(1, 2)] int seed, [Values] bool symbolic)
    {
        // Symbolic: the batch inputs are declared [B, T, ...] as a training graph would declare them.
        Dim[]? Declare(string name, long[] shape) => !symbolic || Weights().Any(w => w.Name == name) ? null : name switch
        {
            "cos" or "sin" => new Dim[] { "T", shape[1] },
            "causal" => new Dim[] { "T", "T" },
            _ => new Dim[] { "B", "T" }.Concat(shape.Skip(2).Select(Dim.Of)).ToArray(),
        };
        var errors = RelativeErrors(Loss, Weights(), Batch(seed), seed, declare: Declare);
        Assert.That(errors.Keys, Is.EquivalentTo(Weights().Select(w => w.Name)));
        foreach (var (name, err) in errors)
            Assert.That(err, Is.LessThanOrEqualTo(1e-6), $"d loss / d {name}: relative error");
    }
}
