using RLHFSpec.Compute.Model.Onnx;
using static RLHFSpec.Compute.Tests.Model.GradientCheck;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>Every autodiff rule (with broadcasting variants) against central finite differences in float64.</summary>
public class GradientRuleTests
{
    /// <summary>Relative-error bound (metric in <see cref="GradientCheck"/>); the issue asks for ≤ 1e-3.</summary>
    private const double Tolerance = 1e-6;

    public sealed record Case(string Name, Func<GraphBuilder, IReadOnlyDictionary<string, Value>, Value> Build,
        Wrt[] Wrt, Dictionary<string, Tensor>? Fixed = null)
    {
        public override string ToString() => Name;
    }

    private static readonly long[] S = { 2, 3, 4 };

    private static Case Unary(string name, Func<GraphBuilder, Value, Value> f, double lo = -1, double hi = 1) =>
        new(name, (g, v) => f(g, v["x"]), new[] { new Wrt("x", S, lo, hi) });

    private static IEnumerable<Case> Cases()
    {
        yield return Unary("Neg", (g, x) => g.Neg(x));
        yield return Unary("Sqrt", (g, x) => g.Sqrt(x), 0.2, 2);
        yield return Unary("Reciprocal", (g, x) => g.Reciprocal(x), 0.5, 2);
        yield return Unary("Exp", (g, x) => g.Exp(x));
        yield return Unary("Log", (g, x) => g.Log(x), 0.2, 2);
        yield return Unary("Sigmoid", (g, x) => g.Sigmoid(x), -3, 3);
        yield return Unary("Silu", (g, x) => g.Silu(x), -3, 3);
        yield return Unary("Identity", (g, x) => g.Identity(x));
        yield return Unary("Cos", (g, x) => g.Cos(x), -3, 3);
        yield return Unary("Sin", (g, x) => g.Sin(x), -3, 3);
        yield return Unary("Clip", (g, x) => g.Clip(x, -0.4, 0.5));
        yield return Unary("ClipMinOnly", (g, x) => g.Clip(x, 0.1, null));
        yield return Unary("CastDoubleToDouble", (g, x) => g.Cast(x, ElementType.Double));
        yield return Unary("SeveralConsumers", (g, x) => g.Sub(g.Add(g.Mul(x, x), g.Exp(x)), x));

        var binary = new (string, Func<GraphBuilder, Value, Value, Value>, double, double, double, double)[]
        {
            ("Add", (g, a, b) => g.Add(a, b), -1, 1, -1, 1),
            ("Sub", (g, a, b) => g.Sub(a, b), -1, 1, -1, 1),
            ("Mul", (g, a, b) => g.Mul(a, b), -1, 1, -1, 1),
            ("Div", (g, a, b) => g.Div(a, b), -1, 1, 0.5, 2),
            ("Pow", (g, a, b) => g.Pow(a, b), 0.5, 2, -1.5, 1.5),
            ("Min", (g, a, b) => g.Min(a, b), -1, 1, -0.3, 0.3),
            ("Max", (g, a, b) => g.Max(a, b), -1, 1, -0.3, 0.3),
        };
        var shapes = new[] { S, new long[] { 4 }, new long[] { 2, 1, 4 }, new long[] { 3, 1 }, Array.Empty<long>() };
        foreach (var (op, f, alo, ahi, blo, bhi) in binary)
        {
            foreach (var sb in shapes)
                yield return new($"{op} [2,3,4] with [{string.Join(",", sb)}]", (g, v) => f(g, v["a"], v["b"]),
                    new[] { new Wrt("a", S, alo, ahi), new Wrt("b", sb, blo, bhi) });
            yield return new($"{op} [3,1] with [2,3,4]", (g, v) => f(g, v["a"], v["b"]),
                new[] { new Wrt("a", new long[] { 3, 1 }, alo, ahi), new Wrt("b", S, blo, bhi) });
        }

        foreach (var (sa, sb) in new[]
                 {
                     (new long[] { 2, 3, 4 }, new long[] { 4, 5 }), (new long[] { 2, 2, 3, 4 }, new long[] { 4, 5 }),
                     (new long[] { 2, 3, 4 }, new long[] { 2, 4, 5 }),
                     (new long[] { 3, 4 }, new long[] { 2, 4, 5 }), (new long[] { 2, 1, 3, 4 }, new long[] { 1, 2, 4, 5 }),
                 })
            yield return new($"MatMul [{string.Join(",", sa)}]x[{string.Join(",", sb)}]", (g, v) => g.MatMul(v["a"], v["b"]),
                new[] { new Wrt("a", sa), new Wrt("b", sb) });

        foreach (var axis in new[] { -1, 1 })
        {
            yield return Unary($"Softmax axis {axis}", (g, x) => g.Softmax(x, axis), -3, 3);
            yield return Unary($"LogSoftmax axis {axis}", (g, x) => g.LogSoftmax(x, axis), -3, 3);
        }
        yield return Unary("ReduceSum [1] keep", (g, x) => g.ReduceSum(x, new[] { 1 }));
        yield return Unary("ReduceSum [0,2] drop", (g, x) => g.ReduceSum(x, new[] { 0, 2 }, keepDims: false));
        yield return Unary("ReduceMean [-1] keep", (g, x) => g.ReduceMean(x, new[] { -1 }));
        yield return Unary("ReduceMean [0,1] drop", (g, x) => g.ReduceMean(x, new[] { 0, 1 }, keepDims: false));
        yield return Unary("ReduceMax [-1] keep", (g, x) => g.ReduceMax(x, new[] { -1 }));
        yield return Unary("ReduceMax [1] drop", (g, x) => g.ReduceMax(x, new[] { 1 }, keepDims: false));

        yield return Unary("Reshape", (g, x) => g.Reshape(x, 6, -1));
        yield return Unary("Transpose", (g, x) => g.Transpose(x, 2, 0, 1));
        yield return Unary("Unsqueeze", (g, x) => g.Unsqueeze(x, 1));
        yield return new("Squeeze", (g, v) => g.Squeeze(v["x"], 1), new[] { new Wrt("x", new long[] { 2, 1, 4 }) });
        yield return Unary("Slice last axis", (g, x) => g.Slice(x, new long[] { 1 }, new long[] { 3 }, new[] { -1 }));
        yield return Unary("Slice negative start", (g, x) => g.Slice(x, new long[] { -2 }, new long[] { long.MaxValue }, new[] { 2 }));
        yield return Unary("Slice two axes", (g, x) => g.Slice(x, new long[] { 1, 0 }, new long[] { 3, 2 }, new[] { 1, 0 }));
        yield return new("Concat", (g, v) => g.Concat(1, v["a"], v["b"], v["a"]),
            new[] { new Wrt("a", S), new Wrt("b", new long[] { 2, 2, 4 }) });
        yield return new("Expand", (g, v) => g.Mul(g.Expand(v["w"], g.ShapeOf(v["x"])), v["x"]),
            new[] { new Wrt("w", new long[] { 3, 1 }), new Wrt("x", S) });
        yield return new("Where broadcast", (g, v) => g.Where(g.Greater(v["c"], g.Scalar(0, ElementType.Double)), v["a"], v["b"]),
            new[] { new Wrt("a", S), new Wrt("b", new long[] { 4 }) },
            new Dictionary<string, Tensor> { ["c"] = T(Rand(new Random(9), 24), S) });
        yield return new("Gather embedding (repeated ids)", (g, v) => g.Gather(v["emb"], v["ids"]),
            new[] { new Wrt("emb", new long[] { 5, 3 }) },
            new Dictionary<string, Tensor> { ["ids"] = L(new long[] { 4, 0, 2, 2, 1, 4 }, 2, 3) });
        yield return new("GatherElements (repeated targets)", (g, v) => g.GatherElements(v["x"], v["idx"], 2),
            new[] { new Wrt("x", new long[] { 2, 3, 5 }) },
            new Dictionary<string, Tensor> { ["idx"] = L(new long[] { 0, 0, 4, 1, 3, 3, 2, 0, 1, 1, 4, 2 }, 2, 3, 2) });
    }

    [TestCaseSource(nameof(Cases))]
    public void RuleMatchesFiniteDifferences(Case c)
    {
        var errors = RelativeErrors(c.Build, c.Wrt, c.Fixed, seed: c.Name.Length * 31 + c.Name[0]);
        foreach (var (name, err) in errors)
            Assert.That(err, Is.LessThanOrEqualTo(Tolerance), $"{c.Name}: d/d{name} relative error");
    }

    [Test]
    public void EveryDifferentiableOpHasACase()
    {
        var covered = string.Join(" ", Cases().Select(c => c.Name));
        foreach (var op in Autodiff.DifferentiableOps)
            Assert.That(covered, Does.Contain(op), $"no gradient check for {op}");
    }

    [Test]
    public void UnrelatedWeightGetsZerosAndUnsupportedOpsAreNamed()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 3);
        var w = g.Input("w", ElementType.Double, 2, 2);
        var loss = g.ReduceSum(g.Mul(x, x), new[] { 0 }, keepDims: false);
        g.Output(loss, "loss");
        Autodiff.Gradients(g, loss, new[] { x, w });
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(new double[] { 1, 2, 3 }, 3), ["w"] = T(new double[] { 1, 2, 3, 4 }, 2, 2) });
        Assert.That(r["grad_x"].D, Is.EqualTo(new double[] { 2, 4, 6 }));
        Assert.That(r["grad_w"].D, Is.EqualTo(new double[4]));
        Assert.That(r["grad_w"].Shape, Is.EqualTo(new long[] { 2, 2 }));

        var g2 = new GraphBuilder();
        var a = g2.Input("a", ElementType.Double, 3);
        var y = g2.Emit("Tanh", new[] { a }, ElementType.Double, a.Shape);
        Assert.That(() => Autodiff.Gradients(g2, y, new[] { a }), Throws.TypeOf<NotSupportedException>().With.Message.Contains("Tanh"));
        var ids = g2.Input("ids", ElementType.Int64, 3);
        Assert.That(() => Autodiff.Gradients(g2, a, new[] { ids }), Throws.ArgumentException.With.Message.Contains("ids"));
    }

    /// <summary>
    /// The shapes the model uses: batch and sequence symbolic ([B, T, H] activations, [B, T] masks and targets),
    /// weights static. Exercises unbroadcasting of weight vectors and masks against symbolic dims.
    /// </summary>
    [Test]
    public void SymbolicBatchAndSequenceDims([Values(17, 18)] int opset)
    {
        Dim[] Declare(string name, long[] shape) => name switch
        {
            "x" => new Dim[] { "B", "T", shape[2] },
            "mask" => new Dim[] { "B", "T" },
            "tgt" => new Dim[] { "B", "T", 1 },
            _ => shape.Select(Dim.Of).ToArray(),
        };
        Value Build(GraphBuilder g, IReadOnlyDictionary<string, Value> v)
        {
            var x = v["x"];
            var ms = g.ReduceMean(g.Mul(x, x), new[] { -1 });
            var h = g.Mul(g.Div(x, g.Sqrt(g.Add(ms, g.Scalar(1e-6, x.Type)))), v["w"]);     // [B, T, 4]
            var heads = g.Transpose(g.Reshape(h, 0, 0, 2, 2), 0, 2, 1, 3);                    // [B, 2, T, 2]
            var rot = g.Concat(-1, g.Neg(g.Slice(heads, new long[] { 1 }, new long[] { 2 }, new[] { -1 })),
                g.Slice(heads, new long[] { 0 }, new long[] { 1 }, new[] { -1 }));
            var back = g.Reshape(g.Transpose(g.Add(heads, rot), 0, 2, 1, 3), 0, 0, 4);
            var logits = g.Add(g.MatMul(back, v["W"]), v["bias"]);                              // [B, T, 5]
            var lp = g.Squeeze(g.GatherElements(g.LogSoftmax(logits), v["tgt"], -1), -1);      // [B, T]
            var peak = g.ReduceMax(g.Softmax(logits), new[] { -1 }, keepDims: false);
            var m = g.Greater(v["mask"], g.Scalar(0.5, x.Type));
            var per = g.Where(m, g.Add(lp, peak), g.Scalar(0, x.Type));
            return g.Div(g.ReduceSum(per, new[] { 0, 1 }, keepDims: false), g.ReduceSum(v["mask"], new[] { 0, 1 }, keepDims: false));
        }
        var fixedInputs = new Dictionary<string, Tensor>
        {
            ["mask"] = T(new double[] { 1, 1, 0, 1, 1, 1 }, 2, 3),
            ["tgt"] = L(new long[] { 0, 4, 2, 2, 1, 3 }, 2, 3, 1),
        };
        var errors = RelativeErrors(Build,
            new[] { new Wrt("x", new long[] { 2, 3, 4 }), new Wrt("w", new long[] { 4 }, 0.5, 1.5), new Wrt("W", new long[] { 4, 5 }), new Wrt("bias", new long[] { 5 }) },
            fixedInputs, seed: opset, declare: Declare, opset: opset);
        foreach (var (name, err) in errors) Assert.That(err, Is.LessThanOrEqualTo(Tolerance), $"opset {opset}: d/d{name}");
    }
}
