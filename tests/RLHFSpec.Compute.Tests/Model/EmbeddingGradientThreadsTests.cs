using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// The embedding (Gather) gradient of a real training shape — many tokens, few distinct ids, float32 — run by ONNX
/// Runtime on several intra-op threads, against a C# reference that adds the same updates in token order. With the
/// earlier ScatterND rule, 2 threads lost updates of repeated ids (differences up to half an entry's size from run to run).
/// </summary>
public class EmbeddingGradientThreadsTests
{
    [TestCase(16, 64, 64, 300, 2, 1)]
    [TestCase(16, 256, 16, 100, 2, 2)]
    [TestCase(50, 32, 33, 77, 3, 3)]
    [TestCase(7, 8, 5, 1000, 4, 4)]
    public void The_embedding_gradient_adds_every_repeated_id_in_token_order(int vocab, int width, int batch, int length, int threads, int seed)
    {
        var random = new Random(seed);
        var g = new GraphBuilder();
        var table = g.Input("emb", ElementType.Float, new Dim[] { vocab, width });
        var ids = g.Input("ids", ElementType.Int64, new Dim[] { "b", "t" });
        var weights = g.Input("r", ElementType.Float, new Dim[] { "b", "t", width });
        var loss = g.ReduceSum(g.Mul(g.Gather(table, ids), weights), new[] { 0, 1, 2 }, keepDims: false);
        g.Output(loss, "loss");
        Autodiff.Gradients(g, loss, new[] { table });

        var emb = Enumerable.Range(0, vocab * width).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var idData = Enumerable.Range(0, batch * length).Select(_ => (long)random.Next(vocab)).ToArray();
        var r = Enumerable.Range(0, batch * length * width).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        // d loss / d emb[v, h] = Σ over tokens n with id v of r[n, h], added in token order (float32, as the op does).
        var expected = new float[vocab * width];
        for (int n = 0; n < idData.Length; n++)
            for (int h = 0; h < width; h++) expected[idData[n] * width + h] += r[(long)n * width + h];

        using var session = new OnnxSession(g.ToBytes(), new OnnxSessionOptions { IntraOpThreads = threads });
        using var vEmb = OrtTensors.Over(emb, vocab, width);
        using var vIds = OrtTensors.Over(idData, batch, length);
        using var vR = OrtTensors.Over(r, batch, length, width);
        var inputs = new Dictionary<string, OrtValue> { ["emb"] = vEmb, ["ids"] = vIds, ["r"] = vR };
        for (int run = 0; run < 3; run++)
        {
            using var outs = session.Run(inputs);
            int at = session.OutputNames.ToList().IndexOf("grad_emb");
            var gradient = outs.ElementAt(at).GetTensorDataAsSpan<float>().ToArray();
            Assert.That(gradient, Is.EqualTo(expected), $"run {run} on {threads} threads: bit for bit the in-order sum");
        }
    }
}
