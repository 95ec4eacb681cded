using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>Runs builder graphs on the CPU provider and gives small dense-array references for the tests.</summary>
public static class OnnxTestHelpers
{
    public sealed record Tensor(Array Data, long[] Shape)
    {
        public double[] D => (double[])Data;
    }

    public static Tensor T(double[] data, params long[] shape) => new(data, shape);
    public static Tensor L(long[] data, params long[] shape) => new(data, shape);

    public static double[] Rand(Random rng, long n, double lo = -1, double hi = 1) =>
        Enumerable.Range(0, (int)n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray();

    public static long Count(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Runs the graph (every output) with the given inputs; outputs come back as double arrays.</summary>
    public static Dictionary<string, Tensor> Run(GraphBuilder g, IReadOnlyDictionary<string, Tensor> inputs,
        OnnxSession? session = null)
    {
        var own = session is null;
        session ??= new OnnxSession(g.ToBytes());
        var values = new Dictionary<string, OrtValue>();
        try
        {
            foreach (var (name, t) in inputs)
                values[name] = t.Data switch
                {
                    double[] d => OrtTensors.Over(d, t.Shape),
                    float[] f => OrtTensors.Over(f, t.Shape),
                    long[] l => OrtTensors.Over(l, t.Shape),
                    _ => throw new ArgumentException($"input {name}: unsupported array {t.Data.GetType()}"),
                };
            using var outs = session.Run(values);
            var result = new Dictionary<string, Tensor>();
            int i = 0;
            foreach (var o in outs)
            {
                var info = o.GetTensorTypeAndShape();
                var data = info.ElementDataType switch
                {
                    TensorElementType.Double => o.GetTensorDataAsSpan<double>().ToArray(),
                    TensorElementType.Float => o.GetTensorDataAsSpan<float>().ToArray().Select(x => (double)x).ToArray(),
                    TensorElementType.Int64 => o.GetTensorDataAsSpan<long>().ToArray().Select(x => (double)x).ToArray(),
                    TensorElementType.Bool => o.GetTensorDataAsSpan<bool>().ToArray().Select(x => x ? 1.0 : 0.0).ToArray(),
                    var t => throw new InvalidOperationException($"output type {t}"),
                };
                result[session.OutputNames[i++]] = new Tensor(data, info.Shape);
            }
            return result;
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
            if (own) session.Dispose();
        }
    }

    public static long[] Strides(long[] shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    /// <summary>NumPy broadcast of <paramref name="a"/> (shape <paramref name="sa"/>) to <paramref name="to"/>.</summary>
    public static double[] BroadcastTo(double[] a, long[] sa, long[] to)
    {
        var result = new double[Count(to)];
        var st = Strides(to);
        var ss = Strides(sa);
        int off = to.Length - sa.Length;
        for (long i = 0; i < result.Length; i++)
        {
            long src = 0, rem = i;
            for (int d = 0; d < to.Length; d++)
            {
                long idx = rem / st[d];
                rem %= st[d];
                int ds = d - off;
                if (ds >= 0 && sa[ds] != 1) src += idx * ss[ds];
            }
            result[i] = a[src];
        }
        return result;
    }

    public static void AssertClose(double[] expected, double[] actual, double tol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        for (int i = 0; i < expected.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(tol + tol * Math.Abs(expected[i])), $"{what}[{i}]");
    }
}
