using RLHFSpec.Compute.Model.Onnx;
using static RLHFSpec.Compute.Tests.Model.OnnxTestHelpers;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>Each op helper's forward pass on ONNX Runtime (CPU, float64 and float32) against a direct C# computation.</summary>
public class OnnxGraphBuilderTests
{
    private const double Tol = 1e-12;
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "onnx-builder-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void RuntimeShapeReshapeInfersDimsAndSavedModelLoads()
    {
        var g = new GraphBuilder("saved");
        var x = g.Input("x", ElementType.Double, "B", 3, 4);
        var flat = g.Reshape(x, g.Int64s(0, -1));
        Assert.That(flat.Shape, Is.EqualTo(new Dim[] { "B", 12 }));
        Assert.That(g.Reshape(flat, -1, 12).Shape, Is.EqualTo(new Dim[] { "B", 12 }));
        Assert.That(g.Reshape(x, -1, 4).Shape[0].IsInvented, "B·3 has no name");
        Assert.That(g.Reshape(x, 0, 2, -1).Shape, Is.EqualTo(new Dim[] { "B", 2, 6 }));
        var back = g.Reshape(flat, g.ShapeOf(x));
        Assert.That(back.Shape, Is.EqualTo(new Dim[] { "B", 3, 4 }));
        g.Output(g.Add(back, x), "y");
        // Grouped-query repeat with symbolic dims: [B, 3, 4] → [B, 3, 2, 4] by a shape built from pieces.
        var shape = g.ShapeOf(x);
        var target = g.Concat(0, g.Slice(shape, new long[] { 0 }, new long[] { 2 }, new[] { 0 }), g.Int64s(2),
            g.Slice(shape, new long[] { -1 }, new long[] { long.MaxValue }, new[] { 0 }));
        var repeated = g.Expand(g.Unsqueeze(x, 2), target);
        Assert.That(repeated.Shape, Is.EqualTo(new Dim[] { "B", 3, 2, 4 }));
        g.Output(repeated, "repeated");
        var path = Path.Combine(_dir, "saved.onnx");
        g.Save(path);
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }), "no temporary file left behind");
        using var s = new OnnxSession(File.ReadAllBytes(path));
        var xv = Rand(new Random(1), 24);
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xv, 2, 3, 4) }, s)["y"];
        AssertClose(xv.Select(v => 2 * v).ToArray(), r.D, 0, "Reshape round trip");
        var rep = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xv, 2, 3, 4) }, s)["repeated"];
        Assert.That(rep.Shape, Is.EqualTo(new long[] { 2, 3, 2, 4 }));
        AssertClose(Enumerable.Range(0, 48).Select(i => xv[i / 8 * 4 + i % 4]).ToArray(), rep.D, 0, "repeat");
    }

    private static readonly (string Op, Func<GraphBuilder, Value, Value> Build, Func<double, double> Ref, double Lo, double Hi)[] UnaryOps =
    {
        ("Neg", (g, x) => g.Neg(x), x => -x, -2, 2),
        ("Sqrt", (g, x) => g.Sqrt(x), Math.Sqrt, 0.1, 3),
        ("Reciprocal", (g, x) => g.Reciprocal(x), x => 1 / x, 0.5, 3),
        ("Exp", (g, x) => g.Exp(x), Math.Exp, -2, 2),
        ("Log", (g, x) => g.Log(x), Math.Log, 0.1, 3),
        ("Sigmoid", (g, x) => g.Sigmoid(x), x => 1 / (1 + Math.Exp(-x)), -4, 4),
        ("Silu", (g, x) => g.Silu(x), x => x / (1 + Math.Exp(-x)), -4, 4),
        ("Clip", (g, x) => g.Clip(x, -0.5, 0.7), x => Math.Clamp(x, -0.5, 0.7), -2, 2),
        ("ClipMaxOnly", (g, x) => g.Clip(x, null, 0.3), x => Math.Min(x, 0.3), -2, 2),
        ("Identity", (g, x) => g.Identity(x), x => x, -2, 2),
        ("Cos", (g, x) => g.Cos(x), Math.Cos, -4, 4),
        ("Sin", (g, x) => g.Sin(x), Math.Sin, -4, 4),
    };

    [Test]
    public void UnaryOpsMatchReference([Range(0, 11)] int which)
    {
        var (op, build, reference, lo, hi) = UnaryOps[which];
        var rng = new Random(10 + which);
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, "B", 3, 4);
        g.Output(build(g, x), "y");
        var xs = Rand(rng, 24, lo, hi);
        var y = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xs, 2, 3, 4) })["y"];
        Assert.That(y.Shape, Is.EqualTo(new long[] { 2, 3, 4 }), op);
        AssertClose(xs.Select(reference).ToArray(), y.D, Tol, op);
    }

    private static readonly (string Op, Func<GraphBuilder, Value, Value, Value> Build, Func<double, double, double> Ref)[] BinaryOps =
    {
        ("Add", (g, a, b) => g.Add(a, b), (a, b) => a + b),
        ("Sub", (g, a, b) => g.Sub(a, b), (a, b) => a - b),
        ("Mul", (g, a, b) => g.Mul(a, b), (a, b) => a * b),
        ("Div", (g, a, b) => g.Div(a, b), (a, b) => a / b),
        ("Pow", (g, a, b) => g.Pow(a, b), Math.Pow),
        ("Min", (g, a, b) => g.Min(a, b), Math.Min),
        ("Max", (g, a, b) => g.Max(a, b), Math.Max),
    };

    private static readonly long[][] BroadcastShapes = { new long[] { 2, 3, 4 }, new long[] { 4 }, new long[] { 2, 1, 4 }, new long[] { 3, 1 } };

    [Test]
    public void BinaryOpsBroadcastAndMatchReference([Range(0, 6)] int which, [Range(0, 3)] int bShape)
    {
        var (op, build, reference) = BinaryOps[which];
        var rng = new Random(100 * which + bShape);
        long[] sa = { 2, 3, 4 }, sb = BroadcastShapes[bShape];
        var g = new GraphBuilder();
        var a = g.Input("a", ElementType.Double, sa.Select(Dim.Of).ToArray());
        var b = g.Input("b", ElementType.Double, sb.Select(Dim.Of).ToArray());
        var y = build(g, a, b);
        Assert.That(y.Shape, Is.EqualTo(sa.Select(Dim.Of).ToArray()), $"{op}: inferred shape");
        g.Output(y, "y");
        var av = Rand(rng, Count(sa), 0.5, 2);
        var bv = Rand(rng, Count(sb), 0.5, 2);
        var outp = Run(g, new Dictionary<string, Tensor> { ["a"] = T(av, sa), ["b"] = T(bv, sb) })["y"];
        var be = BroadcastTo(bv, sb, sa);
        AssertClose(av.Select((x, i) => reference(x, be[i])).ToArray(), outp.D, Tol, op);
    }

    [Test]
    public void MatMulBatchedAgainstWeightMatrix()
    {
        var rng = new Random(3);
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, "B", "T", 4);
        var w = g.Input("w", ElementType.Double, 4, 5);
        var y = g.MatMul(x, w);
        Assert.That(y.Shape, Is.EqualTo(new Dim[] { "B", "T", 5 }));
        g.Output(y, "y");
        var xv = Rand(rng, 2 * 3 * 4);
        var wv = Rand(rng, 20);
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xv, 2, 3, 4), ["w"] = T(wv, 4, 5) })["y"];
        var expected = new double[30];
        for (int bt = 0; bt < 6; bt++)
            for (int o = 0; o < 5; o++)
                for (int k = 0; k < 4; k++)
                    expected[bt * 5 + o] += xv[bt * 4 + k] * wv[k * 5 + o];
        AssertClose(expected, r.D, Tol, "MatMul");
    }

    [Test]
    public void SoftmaxAndLogSoftmaxOverLastAxis()
    {
        var rng = new Random(4);
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 3, 5);
        g.Output(g.Softmax(x), "p");
        g.Output(g.LogSoftmax(x), "lp");
        var xv = Rand(rng, 15, -30, 30); // large logits: the reference and ORT must both be stable
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xv, 3, 5) });
        var p = new double[15];
        var lp = new double[15];
        for (int i = 0; i < 3; i++)
        {
            var row = xv.Skip(i * 5).Take(5).ToArray();
            double m = row.Max(), lse = m + Math.Log(row.Sum(v => Math.Exp(v - m)));
            for (int j = 0; j < 5; j++) { lp[i * 5 + j] = row[j] - lse; p[i * 5 + j] = Math.Exp(row[j] - lse); }
        }
        AssertClose(p, r["p"].D, 1e-12, "Softmax");
        AssertClose(lp, r["lp"].D, 1e-12, "LogSoftmax");
    }

    [Test]
    public void ReductionsKeepAndDropAxes()
    {
        var rng = new Random(5);
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 2, 3, 4);
        g.Output(g.ReduceSum(x, new[] { 1 }, keepDims: false), "sum");
        g.Output(g.ReduceMean(x, new[] { -1 }), "mean");
        g.Output(g.ReduceMax(x, new[] { 0, 2 }, keepDims: false), "max");
        var xv = Rand(rng, 24);
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xv, 2, 3, 4) });
        double At(int i, int j, int k) => xv[i * 12 + j * 4 + k];
        var sum = new double[8];
        var mean = new double[6];
        var max = Enumerable.Repeat(double.NegativeInfinity, 3).ToArray();
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 4; k++)
                {
                    sum[i * 4 + k] += At(i, j, k);
                    mean[i * 3 + j] += At(i, j, k) / 4;
                    max[j] = Math.Max(max[j], At(i, j, k));
                }
        Assert.That(r["sum"].Shape, Is.EqualTo(new long[] { 2, 4 }));
        Assert.That(r["mean"].Shape, Is.EqualTo(new long[] { 2, 3, 1 }));
        AssertClose(sum, r["sum"].D, Tol, "ReduceSum");
        AssertClose(mean, r["mean"].D, Tol, "ReduceMean");
        AssertClose(max, r["max"].D, Tol, "ReduceMax");
    }

    [Test]
    public void ShapeOpsMoveElementsAsDefined()
    {
        var rng = new Random(6);
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 2, 3, 4);
        var t = g.Transpose(x, 2, 0, 1);
        Assert.That(t.Shape, Is.EqualTo(new Dim[] { 4, 2, 3 }));
        g.Output(t, "t");
        var rs = g.Reshape(x, 0, -1);
        Assert.That(rs.Shape, Is.EqualTo(new Dim[] { 2, 12 }));
        g.Output(rs, "reshape");
        var u = g.Unsqueeze(x, 1);
        Assert.That(u.Shape, Is.EqualTo(new Dim[] { 2, 1, 3, 4 }));
        g.Output(g.Squeeze(u, 1), "squeeze");
        var sl = g.Slice(x, new long[] { 2 }, new long[] { long.MaxValue }, new[] { -1 });
        Assert.That(sl.Shape, Is.EqualTo(new Dim[] { 2, 3, 2 }));
        g.Output(sl, "slice");
        var neg = g.Slice(x, new long[] { -2, 0 }, new long[] { -1, 2 }, new[] { 1, 2 });
        Assert.That(neg.Shape, Is.EqualTo(new Dim[] { 2, 1, 2 }));
        g.Output(neg, "sliceneg");
        var cat = g.Concat(-1, sl, g.Neg(sl));
        Assert.That(cat.Shape, Is.EqualTo(new Dim[] { 2, 3, 4 }));
        g.Output(cat, "concat");
        var v = g.Input("v", ElementType.Double, 4);
        g.Output(g.Expand(v, g.ShapeOf(x)), "expand");

        var xv = Rand(rng, 24);
        var vv = Rand(rng, 4);
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = T(xv, 2, 3, 4), ["v"] = T(vv, 4) });
        double At(long i, long j, long k) => xv[i * 12 + j * 4 + k];
        var te = new double[24];
        for (int k = 0; k < 4; k++) for (int i = 0; i < 2; i++) for (int j = 0; j < 3; j++) te[k * 6 + i * 3 + j] = At(i, j, k);
        AssertClose(te, r["t"].D, 0, "Transpose");
        AssertClose(xv, r["reshape"].D, 0, "Reshape");
        AssertClose(xv, r["squeeze"].D, 0, "Squeeze");
        var se = new List<double>();
        var ce = new List<double>();
        for (int i = 0; i < 2; i++) for (int j = 0; j < 3; j++)
        {
            se.Add(At(i, j, 2)); se.Add(At(i, j, 3));
            ce.AddRange(new[] { At(i, j, 2), At(i, j, 3), -At(i, j, 2), -At(i, j, 3) });
        }
        AssertClose(se.ToArray(), r["slice"].D, 0, "Slice");
        AssertClose(new[] { At(0, 1, 0), At(0, 1, 1), At(1, 1, 0), At(1, 1, 1) }, r["sliceneg"].D, 0, "Slice negative");
        AssertClose(ce.ToArray(), r["concat"].D, 0, "Concat");
        AssertClose(BroadcastTo(vv, new long[] { 4 }, new long[] { 2, 3, 4 }), r["expand"].D, 0, "Expand");
    }

    [Test]
    public void IndexingWhereCastAndConstants()
    {
        var rng = new Random(7);
        var g = new GraphBuilder();
        var emb = g.Input("emb", ElementType.Double, 5, 3);
        var ids = g.Input("ids", ElementType.Int64, "B", "T");
        var e = g.Gather(emb, ids);
        Assert.That(e.Shape, Is.EqualTo(new Dim[] { "B", "T", 3 }));
        g.Output(e, "gather");
        var logits = g.Input("logits", ElementType.Double, "B", "T", 5);
        var tgt = g.Input("tgt", ElementType.Int64, "B", "T", 1);
        g.Output(g.GatherElements(logits, tgt, -1), "ge");
        var mask = g.Greater(logits, g.Scalar(0, ElementType.Double));
        g.Output(g.Where(mask, logits, g.Scalar(-1, ElementType.Double)), "where");
        g.Output(g.Cast(g.Cast(logits, ElementType.Float), ElementType.Double), "cast");
        g.Output(g.Add(logits, g.Constant(new double[] { 1, 2, 3, 4, 5 }, new long[] { 5 }, ElementType.Double)), "const");

        var ev = Rand(rng, 15);
        long[] idv = { 4, 0, 2, 2, 1, 3 };
        var lv = Rand(rng, 30);
        long[] tv = { 0, 4, 1, 3, 2, 2 };
        var r = Run(g, new Dictionary<string, Tensor>
        {
            ["emb"] = T(ev, 5, 3), ["ids"] = L(idv, 2, 3), ["logits"] = T(lv, 2, 3, 5), ["tgt"] = L(tv, 2, 3, 1),
        });
        AssertClose(idv.SelectMany(i => ev.Skip((int)i * 3).Take(3)).ToArray(), r["gather"].D, 0, "Gather");
        AssertClose(tv.Select((t, i) => lv[i * 5 + t]).ToArray(), r["ge"].D, 0, "GatherElements");
        AssertClose(lv.Select(v => v > 0 ? v : -1).ToArray(), r["where"].D, 0, "Where");
        AssertClose(lv.Select(v => (double)(float)v).ToArray(), r["cast"].D, 0, "Cast");
        AssertClose(lv.Select((v, i) => v + 1 + i % 5).ToArray(), r["const"].D, 0, "Constant");
    }

    [Test]
    public void Float32GraphsRunToo()
    {
        var rng = new Random(8);
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Float, "N", 4);
        var w = g.Input("w", ElementType.Float, 4);
        // RMSNorm: x · rsqrt(mean(x²) + eps) · w
        var ms = g.ReduceMean(g.Mul(x, x), new[] { -1 });
        var y = g.Mul(g.Mul(x, g.Reciprocal(g.Sqrt(g.Add(ms, g.Scalar(1e-6, ElementType.Float))))), w);
        g.Output(y, "y");
        var xv = Rand(rng, 12).Select(v => (float)v).ToArray();
        var wv = Rand(rng, 4).Select(v => (float)v).ToArray();
        var r = Run(g, new Dictionary<string, Tensor> { ["x"] = new(xv, new long[] { 3, 4 }), ["w"] = new(wv, new long[] { 4 }) });
        var expected = new double[12];
        for (int i = 0; i < 3; i++)
        {
            double m = 0;
            for (int j = 0; j < 4; j++) m += xv[i * 4 + j] * (double)xv[i * 4 + j] / 4;
            for (int j = 0; j < 4; j++) expected[i * 4 + j] = xv[i * 4 + j] / Math.Sqrt(m + 1e-6) * wv[j];
        }
        AssertClose(expected, r["y"].D, 1e-5, "RMSNorm float32");
    }

    [Test]
    public void BadArgumentsAreClearErrors()
    {
        var g = new GraphBuilder("g");
        var a = g.Input("a", ElementType.Double, 2, 3);
        var b = g.Input("b", ElementType.Double, 4, 5);
        var f = g.Input("f", ElementType.Float, 2, 3);
        Assert.That(() => g.Add(a, b), Throws.ArgumentException.With.Message.Contains("do not broadcast"));
        Assert.That(() => g.MatMul(a, b), Throws.ArgumentException.With.Message.Contains("inner dimensions"));
        Assert.That(() => g.Add(a, f), Throws.ArgumentException.With.Message.Contains("element types differ"));
        Assert.That(() => g.Input("a", ElementType.Double, 1), Throws.ArgumentException.With.Message.Contains("'a' is already used"));
        Assert.That(() => g.Softmax(a, 2), Throws.ArgumentException.With.Message.Contains("axis 2"));
        var other = new GraphBuilder("other");
        Assert.That(() => other.Neg(a), Throws.ArgumentException.With.Message.Contains("another graph"));
        Assert.That(() => new GraphBuilder().ToBytes(), Throws.InvalidOperationException);
        Assert.That(() => OnnxSessionOptions.ParseProvider("tpu"), Throws.ArgumentException.With.Message.Contains("'tpu'"));
        Assert.That(OnnxSessionOptions.ParseProvider("CUDA"), Is.EqualTo(ExecutionProvider.Cuda));
    }

    [Test]
    public void MissingInputAndUnavailableProvidersAreClearErrors()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 2);
        g.Output(g.Neg(x), "y");
        using var s = new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = 1, InterOpThreads = 1 });
        Assert.That(() => s.Run(new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue>()),
            Throws.ArgumentException.With.Message.Contains("input 'x' is missing"));
        // This build references the CPU package only: CUDA must be refused with a message naming the option.
        if (!Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
            Assert.That(() => new OnnxSession(g.ToBytes(), new OnnxSessionOptions { Provider = ExecutionProvider.Cuda }),
                Throws.InvalidOperationException.With.Message.Contains("'cuda'"));
        if (!OperatingSystem.IsWindows())
            Assert.That(() => new OnnxSession(g.ToBytes(), new OnnxSessionOptions { Provider = ExecutionProvider.Dml }),
                Throws.TypeOf<PlatformNotSupportedException>().With.Message.Contains("'dml'"));
    }

    [Test]
    public void OutputsCanBeWrittenIntoCallerBuffers()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, 3);
        g.Output(g.Mul(x, x), "y");
        using var s = new OnnxSession(g.ToBytes());
        var xv = new double[] { 1, 2, 3 };
        var yv = new double[3];
        using var xo = OrtTensors.Over(xv, 3);
        using var yo = OrtTensors.Over(yv, 3);
        s.Run(new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["x"] = xo },
            new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["y"] = yo });
        Assert.That(yv, Is.EqualTo(new double[] { 1, 4, 9 }));
        xv[1] = 5; // the input OrtValue is a view of xv: the next run sees the change
        s.Run(new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["x"] = xo },
            new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue> { ["y"] = yo });
        Assert.That(yv, Is.EqualTo(new double[] { 1, 25, 9 }));
    }

    [Test]
    public void IoBindingReusesCallerBuffersAcrossRuns()
    {
        var g = new GraphBuilder();
        var x = g.Input("x", ElementType.Double, "N");
        var w = g.Input("w", ElementType.Double, 1);
        g.Output(g.Mul(x, w), "y");
        g.Output(g.ReduceSum(x, new[] { 0 }), "sum");
        using var s = new OnnxSession(g.ToBytes());
        var xv = new double[] { 1, 2, 3 };
        var wv = new double[] { 2 };
        var yv = new double[3];
        using var xo = OrtTensors.Over(xv, 3);
        using var wo = OrtTensors.Over(wv, 1);
        using var yo = OrtTensors.Over(yv, 3);
        using var binding = s.CreateBinding();
        binding.BindInput("x", xo);
        Assert.That(() => binding.Run(), Throws.InvalidOperationException.With.Message.Contains("'w' is not bound"));
        binding.BindInput("w", wo);
        binding.BindOutput("y", yo);
        binding.BindOutputToHost("sum");
        Assert.That(() => binding.BindOutput("z", yo), Throws.ArgumentException.With.Message.Contains("'z'"));
        binding.Run();
        Assert.That(yv, Is.EqualTo(new double[] { 2, 4, 6 }));
        wv[0] = -1; // updated in place, e.g. by the optimizer: no re-binding needed
        xv[2] = 10;
        binding.Run();
        Assert.That(yv, Is.EqualTo(new double[] { -1, -2, -10 }));
        using var outs = binding.AllocatedOutputs();
        Assert.That(outs.Last().GetTensorDataAsSpan<double>()[0], Is.EqualTo(13));
    }

    [Test]
    public void ThreadOptionsRunTheSameGraphToTheSameResult()
    {
        var g = new GraphBuilder();
        var a = g.Input("a", ElementType.Double, 16, 16);
        var b = g.Input("b", ElementType.Double, 16, 16);
        // Two independent branches, so the parallel (inter-op) executor has something to overlap.
        g.Output(g.Add(g.MatMul(a, b), g.MatMul(b, a)), "y");
        var rng = new Random(12);
        var inputs = new Dictionary<string, Tensor> { ["a"] = T(Rand(rng, 256), 16, 16), ["b"] = T(Rand(rng, 256), 16, 16) };
        using var serial = new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = 1, InterOpThreads = 1 });
        using var parallel = new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = 2, InterOpThreads = 2 });
        AssertClose(Run(g, inputs, serial)["y"].D, Run(g, inputs, parallel)["y"].D, 1e-12, "parallel vs serial");
        Assert.That(() => new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = -1 }),
            Throws.ArgumentException.With.Message.Contains("thread counts"));
    }

    [Test]
    public void GeneratedNamesNeverCollideWithUserNames()
    {
        var g = new GraphBuilder();
        var x = g.Input("Neg_0", ElementType.Double, 2);        // names the builder would generate itself
        var c = g.Input("const_1", ElementType.Double, 2);
        g.Output(g.Add(g.Neg(x), g.Mul(c, g.Scalar(2, ElementType.Double))), "Add_3");
        var r = Run(g, new Dictionary<string, Tensor> { ["Neg_0"] = T(new double[] { 1, 2 }, 2), ["const_1"] = T(new double[] { 3, 4 }, 2) });
        Assert.That(r["Add_3"].D, Is.EqualTo(new double[] { 5, 6 }));
    }
}
