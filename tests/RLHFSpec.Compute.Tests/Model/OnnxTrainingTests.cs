using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// Float32 training graphs (forward + autodiff backward) on the CPU provider, with weights and gradients in
/// <see cref="TensorArena"/>s that the optimizer updates in place and every session reads without copies.
/// </summary>
public class OnnxTrainingTests
{
    /// <summary>Float32 vs float64 (finite-difference-checked) gradients: ‖g32 − g64‖ / ‖g64‖ bound.</summary>
    private const double Float32Tolerance = 1e-4;

    private static readonly string[] NoDecay = { "w_in", "w_post", "w_final", "bq", "bk", "bv" };

    private static Dictionary<string, Value> Declare(GraphBuilder g, ElementType type, Dictionary<string, Tensor> batch)
    {
        var v = new Dictionary<string, Value>();
        foreach (var w in GradientCompositeTests.Weights()) v[w.Name] = g.Input(w.Name, type, w.Shape.Select(Dim.Of).ToArray());
        foreach (var (name, t) in batch)
            v[name] = g.Input(name, t.Data is long[] ? ElementType.Int64 : type, t.Shape.Select(Dim.Of).ToArray());
        return v;
    }

    private static Value Nll(GraphBuilder g, IReadOnlyDictionary<string, Value> v)
    {
        var logp = GradientCompositeTests.TokenLogp(g, v);
        var mask = v["mask"];
        return g.Neg(g.Div(g.ReduceSum(g.Mul(logp, mask), new[] { 0, 1 }, keepDims: false),
            g.ReduceSum(mask, new[] { 0, 1 }, keepDims: false)));
    }

    private static byte[] TrainingGraph(ElementType type, Dictionary<string, Tensor> batch,
        Func<GraphBuilder, IReadOnlyDictionary<string, Value>, Value> loss)
    {
        var g = new GraphBuilder("train");
        var v = Declare(g, type, batch);
        var l = loss(g, v);
        g.Output(l, "loss");
        Autodiff.Gradients(g, l, GradientCompositeTests.Weights().Select(w => v[w.Name]).ToArray());
        return g.ToBytes();
    }

    private static TensorArena NewArena() =>
        new(GradientCompositeTests.Weights().Select(w => (w.Name, w.Shape)));

    private static void Init(TensorArena weights, int seed)
    {
        var rng = new Random(seed);
        foreach (var w in GradientCompositeTests.Weights())
        {
            var s = weights.Span(w.Name);
            for (int i = 0; i < s.Length; i++) s[i] = (float)(w.Lo + (w.Hi - w.Lo) * rng.NextDouble());
        }
    }

    private static Dictionary<string, OrtValue> BatchValues(Dictionary<string, Tensor> batch) =>
        batch.ToDictionary(kv => kv.Key, kv => kv.Value.Data switch
        {
            long[] l => OrtTensors.Over(l, kv.Value.Shape),
            double[] d => OrtTensors.Over(d.Select(x => (float)x).ToArray(), kv.Value.Shape),
            _ => throw new ArgumentException(kv.Key),
        });

    [Test]
    public void Float32GradientsMatchFloat64WithinDocumentedTolerance()
    {
        var batch = GradientCompositeTests.Batch(3);
        using var weights = NewArena();
        using var grads = NewArena();
        Init(weights, 3);
        var batchValues = BatchValues(batch);
        var loss32 = new float[1];
        using var lossValue = OrtTensors.Over(loss32, Array.Empty<long>());
        try
        {
            using var s32 = new OnnxSession(TrainingGraph(ElementType.Float, batch, GradientCompositeTests.Loss));
            var inputs = new Dictionary<string, OrtValue>(batchValues);
            foreach (var n in weights.Names) inputs[n] = weights.Value(n);
            var outputs = new Dictionary<string, OrtValue> { ["loss"] = lossValue };
            foreach (var n in grads.Names) outputs["grad_" + n] = grads.Value(n);
            s32.Run(inputs, outputs); // gradients land directly in the gradient arena

            var g64 = new GraphBuilder("train64");
            var v = Declare(g64, ElementType.Double, batch);
            var l = GradientCompositeTests.Loss(g64, v);
            g64.Output(l, "loss");
            Autodiff.Gradients(g64, l, GradientCompositeTests.Weights().Select(w => v[w.Name]).ToArray());
            var in64 = new Dictionary<string, Tensor>(batch);
            foreach (var n in weights.Names) in64[n] = T(weights.Span(n).ToArray().Select(x => (double)x).ToArray(), weights.Shape(n));
            var r64 = Run(g64, in64);

            Assert.That(loss32[0], Is.EqualTo(r64["loss"].D[0]).Within(1e-5 * Math.Max(1, Math.Abs(r64["loss"].D[0]))));
            foreach (var n in grads.Names)
            {
                var a = grads.Span(n).ToArray();
                var b = r64["grad_" + n].D;
                double diff = Math.Sqrt(a.Zip(b, (x, y) => (x - y) * (x - y)).Sum());
                double norm = Math.Sqrt(b.Sum(x => x * x));
                Assert.That(norm, Is.GreaterThan(1e-6), n);
                Assert.That(diff / norm, Is.LessThanOrEqualTo(Float32Tolerance), $"float32 gradient of {n}");
            }
        }
        finally
        {
            foreach (var x in batchValues.Values) x.Dispose();
        }
    }

    [Test]
    public void OptimizerUpdatesAreSeenByGenerationAndTrainingGraphsWithoutCopies()
    {
        var batch = GradientCompositeTests.Batch(4);
        using var weights = NewArena();
        using var grads = NewArena();
        Init(weights, 4);
        var batchValues = BatchValues(batch);
        var loss = new float[1];
        using var lossValue = OrtTensors.Over(loss, Array.Empty<long>());

        var gen = new GraphBuilder("generate");
        var gv = Declare(gen, ElementType.Float, batch);
        gen.Output(GradientCompositeTests.TokenLogp(gen, gv), "logp");
        var genBytes = gen.ToBytes();
        try
        {
            using var generation = new OnnxSession(genBytes);
            using var training = new OnnxSession(TrainingGraph(ElementType.Float, batch, Nll));
            // The same OrtValue objects (views of the arena) feed both sessions for the whole test.
            var inputs = new Dictionary<string, OrtValue>(batchValues);
            foreach (var n in weights.Names) inputs[n] = weights.Value(n);
            var outputs = new Dictionary<string, OrtValue> { ["loss"] = lossValue };
            foreach (var n in grads.Names) outputs["grad_" + n] = grads.Value(n);

            var opt = new AdamW(new AdamWOptions
            {
                Schedule = new LearningRateSchedule(0.03, warmupSteps: 3, totalSteps: 40, minLr: 0.003),
                WeightDecay = 0.01, MaxGradNorm = 1.0,
            });
            foreach (var n in weights.Names) opt.Add(n, weights.Memory(n), grads.Memory(n), decay: !NoDecay.Contains(n));

            float[] Generate()
            {
                var genInputs = inputs.Where(kv => generation.InputNames.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value);
                using var o = generation.Run(genInputs);
                return o.First().GetTensorDataAsSpan<float>().ToArray();
            }

            var before = Generate();
            var losses = new List<float>();
            for (int step = 0; step < 40; step++)
            {
                training.Run(inputs, outputs);
                losses.Add(loss[0]);
                Assert.That(double.IsFinite(opt.Update()), $"step {step}: finite gradient norm");
            }
            training.Run(inputs, outputs);
            losses.Add(loss[0]);
            Assert.That(losses[^1], Is.LessThan(0.5 * losses[0]), $"NLL should fall: {string.Join(", ", losses)}");
            for (int i = 1; i < losses.Count; i++) Assert.That(losses[i], Is.Not.EqualTo(losses[i - 1]), $"run {i} saw the update");

            // The generation session, fed the very same OrtValues, sees the trained weights ...
            var after = Generate();
            Assert.That(after, Is.Not.EqualTo(before));
            // ... exactly as a fresh session over COPIES of the current weights computes them.
            var copies = new Dictionary<string, Tensor>();
            foreach (var (k, t) in batch) copies[k] = t.Data is long[] ? t : new Tensor(t.D.Select(x => (float)x).ToArray(), t.Shape);
            foreach (var n in weights.Names) copies[n] = new Tensor(weights.Span(n).ToArray(), weights.Shape(n));
            var fresh = new GraphBuilder("generate");
            fresh.Output(GradientCompositeTests.TokenLogp(fresh, Declare(fresh, ElementType.Float, batch)), "logp");
            var reference = Run(fresh, copies)["logp"].D;
            AssertClose(reference, after.Select(x => (double)x).ToArray(), 1e-6, "logp after training");
        }
        finally
        {
            foreach (var x in batchValues.Values) x.Dispose();
        }
    }

    [Test]
    public void ArenaTensorsAreContiguousPinnedViews()
    {
        using var arena = new TensorArena(new[] { ("a", new long[] { 2, 3 }), ("b", new long[] { 4 }) });
        Assert.That(arena.Length, Is.EqualTo(10));
        arena.Span("b")[1] = 7;
        Assert.That(arena.All.Span[7], Is.EqualTo(7));
        Assert.That((long)(arena.Address("b") - arena.Address("a")), Is.EqualTo(6L * sizeof(float)));
        Assert.That(arena.Value("b").GetTensorDataAsSpan<float>()[1], Is.EqualTo(7));
        Assert.That(arena.Value("a").GetTensorTypeAndShape().Shape, Is.EqualTo(new long[] { 2, 3 }));
        Assert.That(ReferenceEquals(arena.Value("a"), arena.Value("a")));
        Assert.That(() => arena.Span("c"), Throws.ArgumentException.With.Message.Contains("'c'"));
        Assert.That(() => new TensorArena(new[] { ("a", new long[] { 1 }), ("a", new long[] { 1 }) }),
            Throws.ArgumentException.With.Message.Contains("'a' declared twice"));
    }

    /// <summary>
    /// One RLHF-style loop on the whole-decoder policy-loss graph in float32: weights and gradients in arenas,
    /// AdamW with the spec's decay mask; positive advantages on the sampled targets must raise their log-probs.
    /// </summary>
    [Test]
    public void DecoderPolicyLossTrainingLoopRaisesAdvantagedLogProbs()
    {
        var spec = new DecoderGraphSpec
        {
            VocabSize = 13, HiddenSize = 16, IntermediateSize = 24, NumLayers = 2, NumHeads = 4, NumKvHeads = 2,
            HeadDim = 4, TiedEmbeddings = true, QkvBias = true,
        };
        const int b = 2, t = 6;
        var rng = new Random(11);
        using var weights = new TensorArena(spec.Tensors());
        using var grads = new TensorArena(spec.Tensors());
        foreach (var (name, _) in spec.Tensors())
        {
            var w = weights.Span(name);
            for (int i = 0; i < w.Length; i++) w[i] = name.Contains("norm") ? 1f : (float)((rng.NextDouble() - 0.5) * 0.4);
        }
        float[] F(int n, Func<int, double> f) => Enumerable.Range(0, n).Select(i => (float)f(i)).ToArray();
        var mask = F(b * t, i => i < t || i >= t + 2 ? 1 : 0); // second sample left-padded by two
        var positions = Enumerable.Range(0, b * t).Select(i => i < t ? i : Math.Max(0, i - t - 2)).Select(p => (long)p).ToArray();
        var ids = Enumerable.Range(0, b * t).Select(_ => (long)rng.Next(spec.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, b * t).Select(_ => (long)rng.Next(spec.VocabSize)).ToArray();
        var old = new float[b * t];
        var adv = F(b * t, _ => 1.0);
        var logp = new float[b * t];
        var loss = new float[1];

        var graph = DecoderTrainingGraph.PolicyLossGraph(spec, ElementType.Float, clipLow: 0.2, clipHigh: 0.2);
        using var session = new OnnxSession(graph.ToBytes(), new OnnxSessionOptions { IntraOpThreads = 1 });
        var owned = new List<OrtValue>
        {
            OrtTensors.Over(ids, b, t), OrtTensors.Over(positions, b, t), OrtTensors.Over(mask, b, t),
            OrtTensors.Over(targets, b, t), OrtTensors.Over(old, b, t), OrtTensors.Over(adv, b, t),
            OrtTensors.Over(mask, b, t), OrtTensors.Over(logp, b, t), OrtTensors.Over(loss, Array.Empty<long>()),
        };
        try
        {
            var inputs = new Dictionary<string, OrtValue>
            {
                [DecoderTrainingGraph.InputIds] = owned[0], [DecoderTrainingGraph.PositionIds] = owned[1],
                [DecoderTrainingGraph.AttentionMask] = owned[2], [DecoderTrainingGraph.Targets] = owned[3],
                [DecoderTrainingGraph.OldLogProbs] = owned[4], [DecoderTrainingGraph.Advantages] = owned[5],
                [DecoderTrainingGraph.LossMask] = owned[6],
            };
            foreach (var n in weights.Names) inputs[n] = weights.Value(n);
            var outputs = new Dictionary<string, OrtValue> { [DecoderTrainingGraph.LogProbs] = owned[7], [DecoderTrainingGraph.Loss] = owned[8] };
            foreach (var n in grads.Names) outputs[DecoderTrainingGraph.GradientPrefix + n] = grads.Value(n);
            var opt = new AdamW(new AdamWOptions { Schedule = new LearningRateSchedule(0.01, 2, 30, 0.001), MaxGradNorm = 1.0 });
            foreach (var n in weights.Names) opt.Add(n, weights.Memory(n), grads.Memory(n), DecoderGraphSpec.Decays(n));

            double MeanLogp() => Enumerable.Range(0, b * t).Where(i => mask[i] > 0).Average(i => (double)logp[i]);
            double first = double.NaN;
            for (int step = 0; step < 30; step++)
            {
                session.Run(inputs, outputs);
                Assert.That(logp.All(float.IsFinite) && float.IsFinite(loss[0]), $"step {step}: finite outputs");
                if (step == 0) first = MeanLogp();
                // On-policy: the old log-probs are this step's, so the ratio starts at 1 (as in an RLHF update).
                Array.Copy(logp, old, logp.Length);
                opt.Update();
            }
            session.Run(inputs, outputs);
            Assert.That(MeanLogp(), Is.GreaterThan(first + 0.5), "advantaged targets became more likely");
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
    }
}
