using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// Compares autodiff gradients (run by ONNX Runtime, float64) with central finite differences of the same
/// graph's forward pass. The graph's output y is reduced to a scalar loss Σ y ⊙ r with a fixed random r, so every
/// output element carries a distinct weight. Metric per differentiated input:
/// ‖g − g_fd‖₂ / max(‖g‖₂, ‖g_fd‖₂, 1e-8), step h = 1e-5 (truncation ~h², round-off ~1e-16/h, both ≪ tolerance).
/// </summary>
public static class GradientCheck
{
    public const double Step = 1e-5;

    public sealed record Wrt(string Name, long[] Shape, double Lo = -1, double Hi = 1);

    /// <summary>Builds y from the declared inputs (by name), differentiates, and returns the error per wrt input.</summary>
    public static Dictionary<string, double> RelativeErrors(
        Func<GraphBuilder, IReadOnlyDictionary<string, Value>, Value> build,
        IReadOnlyList<Wrt> wrt, IReadOnlyDictionary<string, Tensor>? fixedInputs, int seed,
        bool requireNonZero = true, Func<string, long[], Dim[]?>? declare = null, int opset = GraphBuilder.DefaultOpset)
    {
        var rng = new Random(seed);
        var data = new Dictionary<string, Tensor>();
        foreach (var w in wrt) data[w.Name] = T(Rand(rng, Count(w.Shape), w.Lo, w.Hi), w.Shape);
        foreach (var (k, v) in fixedInputs ?? new Dictionary<string, Tensor>()) data[k] = v;

        // Pass 1: the forward graph alone, to learn y's runtime shape (for the weights r).
        var g0 = Declare(data, declare, opset, out var in0);
        g0.Output(build(g0, in0), "y");
        var yShape = Run(g0, data)["y"].Shape;

        var g = Declare(data, declare, opset, out var inputs);
        var y = build(g, inputs);
        var r = g.Input("r__", ElementType.Double, yShape.Select(Dim.Of).ToArray());
        var weighted = g.Mul(y, r);
        var loss = y.Rank == 0 ? weighted : g.ReduceSum(weighted, Enumerable.Range(0, y.Rank).ToArray(), keepDims: false);
        g.Output(loss, "loss");
        Autodiff.Gradients(g, loss, wrt.Select(w => inputs[w.Name]).ToArray());
        data["r__"] = T(Rand(rng, Count(yShape), -1, 1), yShape);

        using var session = new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = 1 });
        var values = data.ToDictionary(kv => kv.Key, kv => kv.Value.Data switch
        {
            double[] d => OrtTensors.Over(d, kv.Value.Shape),
            long[] l => OrtTensors.Over(l, kv.Value.Shape),
            _ => throw new ArgumentException(kv.Key),
        });
        try
        {
            var analytic = new Dictionary<string, double[]>();
            using (var outs = session.Run(values))
            {
                for (int i = 0; i < session.OutputNames.Count; i++)
                    if (session.OutputNames[i].StartsWith("grad_", StringComparison.Ordinal))
                        analytic[session.OutputNames[i]["grad_".Length..]] = outs.ElementAt(i).GetTensorDataAsSpan<double>().ToArray();
            }
            double Loss()
            {
                using var o = session.Run(values, new[] { "loss" });
                return o.First().GetTensorDataAsSpan<double>()[0];
            }
            var errors = new Dictionary<string, double>();
            foreach (var w in wrt)
            {
                // Perturb the array in place: the OrtValue is a view of it, so no re-binding is needed.
                var x = data[w.Name].D;
                var fd = new double[x.Length];
                for (int i = 0; i < x.Length; i++)
                {
                    double saved = x[i];
                    x[i] = saved + Step;
                    double up = Loss();
                    x[i] = saved - Step;
                    double down = Loss();
                    x[i] = saved;
                    fd[i] = (up - down) / (2 * Step);
                }
                var g1 = analytic[w.Name];
                Assert.That(g1.Length, Is.EqualTo(fd.Length), $"gradient of {w.Name}: length");
                double diff = Math.Sqrt(g1.Zip(fd, (a, b) => (a - b) * (a - b)).Sum());
                double na = Math.Sqrt(g1.Sum(a => a * a)), nf = Math.Sqrt(fd.Sum(a => a * a));
                if (requireNonZero) Assert.That(nf, Is.GreaterThan(1e-6), $"{w.Name}: finite-difference gradient is zero; the check would be vacuous");
                errors[w.Name] = diff / Math.Max(Math.Max(na, nf), 1e-8);
            }
            return errors;
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
        }
    }

    /// <summary>Declares every input; <paramref name="declare"/> may give symbolic dims instead of the static ones.</summary>
    private static GraphBuilder Declare(Dictionary<string, Tensor> data, Func<string, long[], Dim[]?>? declare, int opset,
        out Dictionary<string, Value> inputs)
    {
        var g = new GraphBuilder("gradcheck", opset);
        inputs = new Dictionary<string, Value>();
        foreach (var (name, t) in data)
            if (name != "r__")
                inputs[name] = g.Input(name, t.Data is long[] ? ElementType.Int64 : ElementType.Double, declare?.Invoke(name, t.Shape) ?? t.Shape.Select(Dim.Of).ToArray());
        return g;
    }
}
