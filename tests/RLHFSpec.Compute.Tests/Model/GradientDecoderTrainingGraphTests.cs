using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// The whole-model training graph: forward log-probs against an independent double-precision C# decoder (with
/// left padding), and the policy-loss gradients of every weight against central finite differences.
/// </summary>
public class GradientDecoderTrainingGraphTests
{
    internal static readonly DecoderGraphSpec Qwen2Like = new()
    {
        VocabSize = 9, HiddenSize = 8, IntermediateSize = 12, NumLayers = 2, NumHeads = 2, NumKvHeads = 1, HeadDim = 4,
        RmsEps = 1e-6, RopeTheta = 10000, TiedEmbeddings = true, QkvBias = true,
    };

    private static readonly DecoderGraphSpec LlamaLike = Qwen2Like with
    {
        NumKvHeads = 2, TiedEmbeddings = false, QkvBias = true, OutputBias = true, MlpBias = true, RopeTheta = 500,
    };

    internal const int B = 2, Tn = 5;

    // Sample 0 is full; sample 1 is left-padded by two (mask 0, positions count real tokens only).
    private static readonly double[] Mask = { 1, 1, 1, 1, 1, 0, 0, 1, 1, 1 };
    private static readonly long[] Positions = { 0, 1, 2, 3, 4, 0, 0, 0, 1, 2 };

    internal static Dictionary<string, double[]> RandomWeights(DecoderGraphSpec spec, int seed)
    {
        var rng = new Random(seed);
        return spec.Tensors().ToDictionary(t => t.Name, t => t.Name.Contains("norm")
            ? Rand(rng, Count(t.Shape), 0.6, 1.4)
            : Rand(rng, Count(t.Shape), -0.5, 0.5));
    }

    internal static Dictionary<string, Tensor> Sequences(DecoderGraphSpec spec, int seed)
    {
        var rng = new Random(seed + 100);
        return new Dictionary<string, Tensor>
        {
            [DecoderTrainingGraph.InputIds] = L(Enumerable.Range(0, B * Tn).Select(_ => (long)rng.Next(spec.VocabSize)).ToArray(), B, Tn),
            [DecoderTrainingGraph.PositionIds] = L(Positions, B, Tn),
            [DecoderTrainingGraph.AttentionMask] = T(Mask, B, Tn),
            [DecoderTrainingGraph.Targets] = L(Enumerable.Range(0, B * Tn).Select(_ => (long)rng.Next(spec.VocabSize)).ToArray(), B, Tn),
            [DecoderTrainingGraph.OldLogProbs] = T(Rand(rng, B * Tn, -2.9, -1.5), B, Tn),
            [DecoderTrainingGraph.RefLogProbs] = T(Rand(rng, B * Tn, -2.9, -1.5), B, Tn),
            [DecoderTrainingGraph.Advantages] = T(Rand(rng, B * Tn, -1, 1), B, Tn),
            [DecoderTrainingGraph.LossMask] = T(Mask, B, Tn),
        };
    }

    // ---------------------------------------------------------------- independent C# reference

    private static double[] Linear(Dictionary<string, double[]> w, string name, double[] x, int outDim, bool bias)
    {
        var W = w[name + ".weight"];
        var y = new double[outDim];
        for (int o = 0; o < outDim; o++)
        {
            double s = bias ? w[name + ".bias"][o] : 0;
            for (int i = 0; i < x.Length; i++) s += W[o * x.Length + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    private static double[] Norm(double[] x, double[] w, double eps)
    {
        double ms = x.Sum(v => v * v) / x.Length;
        return x.Select((v, i) => v / Math.Sqrt(ms + eps) * w[i]).ToArray();
    }

    private static void Rope(double[] x, int offset, int hd, int pos, double theta)
    {
        int half = hd / 2;
        for (int i = 0; i < half; i++)
        {
            double a = pos * Math.Pow(theta, -2.0 * i / hd), c = Math.Cos(a), s = Math.Sin(a);
            double x1 = x[offset + i], x2 = x[offset + i + half];
            x[offset + i] = x1 * c - x2 * s;
            x[offset + i + half] = x2 * c + x1 * s;
        }
    }

    /// <summary>Log-softmax rows [n][V] for one unpadded sequence at positions 0..n−1.</summary>
    private static double[][] ReferenceLogSoftmax(DecoderGraphSpec s, Dictionary<string, double[]> w, long[] tokens)
    {
        int n = tokens.Length, h = s.HiddenSize, hd = s.HeadDim, q = s.NumHeads * hd, kv = s.NumKvHeads * hd;
        var emb = w["model.embed_tokens.weight"];
        var x = tokens.Select(t => emb.Skip((int)t * h).Take(h).ToArray()).ToArray();
        for (int l = 0; l < s.NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var hs = x.Select(r => Norm(r, w[p + "input_layernorm.weight"], s.RmsEps)).ToArray();
            var qs = hs.Select(r => Linear(w, p + "self_attn.q_proj", r, q, s.QkvBias)).ToArray();
            var ks = hs.Select(r => Linear(w, p + "self_attn.k_proj", r, kv, s.QkvBias)).ToArray();
            var vs = hs.Select(r => Linear(w, p + "self_attn.v_proj", r, kv, s.QkvBias)).ToArray();
            for (int t = 0; t < n; t++)
            {
                for (int head = 0; head < s.NumHeads; head++) Rope(qs[t], head * hd, hd, t, s.RopeTheta);
                for (int head = 0; head < s.NumKvHeads; head++) Rope(ks[t], head * hd, hd, t, s.RopeTheta);
            }
            var attn = new double[n][];
            for (int t = 0; t < n; t++)
            {
                attn[t] = new double[q];
                for (int head = 0; head < s.NumHeads; head++)
                {
                    int kvHead = head / (s.NumHeads / s.NumKvHeads);
                    var scores = new double[t + 1];
                    for (int j = 0; j <= t; j++)
                    {
                        for (int i = 0; i < hd; i++) scores[j] += qs[t][head * hd + i] * ks[j][kvHead * hd + i];
                        scores[j] /= Math.Sqrt(hd);
                    }
                    double m = scores.Max(), z = scores.Sum(v => Math.Exp(v - m));
                    for (int j = 0; j <= t; j++)
                        for (int i = 0; i < hd; i++) attn[t][head * hd + i] += Math.Exp(scores[j] - m) / z * vs[j][kvHead * hd + i];
                }
            }
            for (int t = 0; t < n; t++)
            {
                var o = Linear(w, p + "self_attn.o_proj", attn[t], h, s.OutputBias);
                for (int i = 0; i < h; i++) x[t][i] += o[i];
                var h2 = Norm(x[t], w[p + "post_attention_layernorm.weight"], s.RmsEps);
                var gate = Linear(w, p + "mlp.gate_proj", h2, s.IntermediateSize, s.MlpBias);
                var up = Linear(w, p + "mlp.up_proj", h2, s.IntermediateSize, s.MlpBias);
                var act = gate.Select((gv, i) => gv / (1 + Math.Exp(-gv)) * up[i]).ToArray();
                var down = Linear(w, p + "mlp.down_proj", act, h, s.MlpBias);
                for (int i = 0; i < h; i++) x[t][i] += down[i];
            }
        }
        var head2 = s.TiedEmbeddings ? "model.embed_tokens" : "lm_head";
        return x.Select(r =>
        {
            var logits = Linear(w, head2, Norm(r, w["model.norm.weight"], s.RmsEps), s.VocabSize, false);
            double m = logits.Max(), lse = m + Math.Log(logits.Sum(v => Math.Exp(v - m)));
            return logits.Select(v => v - lse).ToArray();
        }).ToArray();
    }

    // ---------------------------------------------------------------- tests

    private static IEnumerable<TestCaseData> Specs()
    {
        yield return new TestCaseData(Qwen2Like).SetArgDisplayNames("qwen2-like (qkv bias, tied, GQA)");
        yield return new TestCaseData(LlamaLike).SetArgDisplayNames("llama-like (all biases, untied, MHA)");
    }

    private static (GraphBuilder Graph, Dictionary<string, Tensor> Inputs) PolicyGraph(DecoderGraphSpec spec, int seed)
    {
        var g = DecoderTrainingGraph.PolicyLossGraph(spec, ElementType.Double, klBeta: 0.1, clipLow: 0.2, clipHigh: 0.28);
        var inputs = Sequences(spec, seed);
        foreach (var (name, data) in RandomWeights(spec, seed))
            inputs[name] = T(data, spec.Tensors().First(t => t.Name == name).Shape);
        return (g, inputs);
    }

    [TestCaseSource(nameof(Specs))]
    public void LogProbsMatchIndependentReferenceWithPadding(DecoderGraphSpec spec)
    {
        var (g, inputs) = PolicyGraph(spec, 1);
        var r = Run(g, inputs);
        var logp = r[DecoderTrainingGraph.LogProbs].D;
        var w = inputs.Where(kv => kv.Key.StartsWith("model.") || kv.Key.StartsWith("lm_head")).ToDictionary(kv => kv.Key, kv => kv.Value.D);
        var ids = (long[])inputs[DecoderTrainingGraph.InputIds].Data;
        var targets = (long[])inputs[DecoderTrainingGraph.Targets].Data;
        for (int b = 0; b < B; b++)
        {
            var real = Enumerable.Range(b * Tn, Tn).Where(i => Mask[i] > 0).ToArray();
            var rows = ReferenceLogSoftmax(spec, w, real.Select(i => ids[i]).ToArray());
            for (int k = 0; k < real.Length; k++)
                Assert.That(logp[real[k]], Is.EqualTo(rows[k][targets[real[k]]]).Within(1e-10), $"sample {b}, token {k}");
        }
        Assert.That(logp.All(double.IsFinite), "padding rows stay finite");
    }

    [TestCaseSource(nameof(Specs))]
    public void EveryWeightGradientMatchesFiniteDifferences(DecoderGraphSpec spec)
    {
        var (g, inputs) = PolicyGraph(spec, 2);
        CheckGradients(spec, g, inputs);
    }

    private static (GraphBuilder Graph, Dictionary<string, Tensor> Inputs) LanguageModelGraph(DecoderGraphSpec spec, int seed)
    {
        var g = DecoderTrainingGraph.LanguageModelLossGraph(spec, ElementType.Double);
        var all = Sequences(spec, seed);
        var inputs = new[] { DecoderTrainingGraph.InputIds, DecoderTrainingGraph.PositionIds, DecoderTrainingGraph.AttentionMask,
            DecoderTrainingGraph.Targets }.ToDictionary(n => n, n => all[n]);
        // Loss only on part of the real tokens (as on a response after its prompt): mask a prefix of each sample too.
        var lossMask = Mask.Select((m, i) => i % Tn < 2 ? 0.0 : m).ToArray();
        inputs[DecoderTrainingGraph.LossMask] = T(lossMask, B, Tn);
        foreach (var (name, data) in RandomWeights(spec, seed))
            inputs[name] = T(data, spec.Tensors().First(t => t.Name == name).Shape);
        return (g, inputs);
    }

    [TestCaseSource(nameof(Specs))]
    public void LanguageModelLossIsMaskedMeanNllAndItsGradientsMatchFiniteDifferences(DecoderGraphSpec spec)
    {
        var (g, inputs) = LanguageModelGraph(spec, 3);
        var r = Run(g, inputs);
        var logp = r[DecoderTrainingGraph.LogProbs].D;
        var mask = inputs[DecoderTrainingGraph.LossMask].D;
        var w = inputs.Where(kv => kv.Key.StartsWith("model.") || kv.Key.StartsWith("lm_head")).ToDictionary(kv => kv.Key, kv => kv.Value.D);
        var ids = (long[])inputs[DecoderTrainingGraph.InputIds].Data;
        var targets = (long[])inputs[DecoderTrainingGraph.Targets].Data;
        double nll = 0, count = 0;
        for (int b = 0; b < B; b++)
        {
            var real = Enumerable.Range(b * Tn, Tn).Where(i => Mask[i] > 0).ToArray();
            var rows = ReferenceLogSoftmax(spec, w, real.Select(i => ids[i]).ToArray());
            for (int k = 0; k < real.Length; k++)
            {
                Assert.That(logp[real[k]], Is.EqualTo(rows[k][targets[real[k]]]).Within(1e-10), $"sample {b}, token {k}");
                nll -= mask[real[k]] * rows[k][targets[real[k]]];
                count += mask[real[k]];
            }
        }
        Assert.That(count, Is.GreaterThan(0));
        Assert.That(r[DecoderTrainingGraph.Loss].D[0], Is.EqualTo(nll / count).Within(1e-10), "loss = masked mean NLL");
        CheckGradients(spec, g, inputs);
    }

    internal static void CheckGradients(DecoderGraphSpec spec, GraphBuilder g, Dictionary<string, Tensor> inputs) =>
        CheckGradients(spec.Tensors(), g, inputs);

    /// <summary>As above for a graph over the given weights (e.g. a value model's trunk and score head).</summary>
    internal static void CheckGradients(IReadOnlyList<(string Name, long[] Shape)> tensors, GraphBuilder g, Dictionary<string, Tensor> inputs)
    {
        using var session = new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = 1 });
        var values = inputs.ToDictionary(kv => kv.Key, kv => kv.Value.Data is long[] l
            ? OrtTensors.Over(l, kv.Value.Shape) : OrtTensors.Over(kv.Value.D, kv.Value.Shape));
        try
        {
            var grads = new Dictionary<string, double[]>();
            using (var outs = session.Run(values))
                for (int i = 0; i < session.OutputNames.Count; i++)
                    if (session.OutputNames[i].StartsWith(DecoderTrainingGraph.GradientPrefix))
                        grads[session.OutputNames[i][DecoderTrainingGraph.GradientPrefix.Length..]] = outs.ElementAt(i).GetTensorDataAsSpan<double>().ToArray();
            Assert.That(grads.Keys, Is.EquivalentTo(tensors.Select(t => t.Name)));
            double Loss()
            {
                using var o = session.Run(values, new[] { DecoderTrainingGraph.Loss });
                return o.First().GetTensorDataAsSpan<double>()[0];
            }
            const double h = 1e-5;
            foreach (var (name, _) in tensors)
            {
                var x = inputs[name].D; // the OrtValue is a view: perturbing the array perturbs the input
                var fd = new double[x.Length];
                for (int i = 0; i < x.Length; i++)
                {
                    double saved = x[i];
                    x[i] = saved + h; double up = Loss();
                    x[i] = saved - h; double down = Loss();
                    x[i] = saved;
                    fd[i] = (up - down) / (2 * h);
                }
                var gr = grads[name];
                double diff = Math.Sqrt(gr.Zip(fd, (a, b) => (a - b) * (a - b)).Sum());
                double scale = Math.Max(Math.Max(Math.Sqrt(gr.Sum(a => a * a)), Math.Sqrt(fd.Sum(a => a * a))), 1e-8);
                Assert.That(Math.Sqrt(fd.Sum(a => a * a)), Is.GreaterThan(1e-7), $"{name}: zero gradient makes the check vacuous");
                Assert.That(diff / scale, Is.LessThanOrEqualTo(1e-6), $"d loss / d {name}");
            }
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
        }
    }

    [Test]
    public void SpecIsValidatedAndNamesFollowHuggingFace()
    {
        Assert.That(() => (Qwen2Like with { NumKvHeads = 3 }).Validate(), Throws.ArgumentException.With.Message.Contains("kv heads"));
        Assert.That(() => (Qwen2Like with { HeadDim = 3 }).Validate(), Throws.ArgumentException.With.Message.Contains("even"));
        var names = LlamaLike.Tensors().Select(t => t.Name).ToArray();
        Assert.That(names, Does.Contain("lm_head.weight").And.Contain("model.layers.1.mlp.down_proj.bias"));
        Assert.That(Qwen2Like.Tensors().Select(t => t.Name), Does.Not.Contain("lm_head.weight"));
        Assert.That(DecoderGraphSpec.Decays("model.layers.0.self_attn.q_proj.weight"));
        Assert.That(!DecoderGraphSpec.Decays("model.layers.0.self_attn.q_proj.bias"));
        Assert.That(!DecoderGraphSpec.Decays("model.norm.weight"));
    }
}
