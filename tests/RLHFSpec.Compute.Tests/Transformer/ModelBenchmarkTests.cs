using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>What <c>bench model</c> derives from a step: the K/V bytes its attention reads and the attention time against reading them at copy bandwidth.</summary>
public class ModelBenchmarkTests
{
    [Test]
    public void A_step_row_counts_the_kv_bytes_its_attention_reads()
    {
        using var weights = TransformerTestModels.Weights(TransformerTestModels.Config("llama", layers: 2), seed: 3);
        using var backend = new CpuBackend(1);
        var bench = new ModelBenchmark(weights, backend, new OnnxSessionOptions()) { MinSeconds = 0.01 };
        var row = bench.Step(batch: 3, nodes: 4, context: 20);
        var spec = weights.Spec;
        // K and V, every layer, every sample's context and new tokens, fp32 words (the default KV dtype).
        long want = 2L * spec.NumLayers * 3 * (20 + 4) * spec.NumKvHeads * spec.HeadDim * sizeof(float);
        Assert.That(row.KvBytes, Is.EqualTo(want));
        Assert.That(row.AttentionSeconds, Is.GreaterThan(0).And.LessThan(row.Seconds));
        double copy = 10e9;
        Assert.That(row.AttentionOverKvRead(copy), Is.EqualTo(row.AttentionSeconds / (want / copy)).Within(1e-12));
        Assert.That(new ModelBenchmarkRow("dense-vs-matmul", 1, 1, 1, 1, 1).AttentionOverKvRead(copy), Is.NaN);
    }

    [Test]
    public void Copy_bandwidth_is_a_positive_rate()
    {
        double rate = ModelBenchmark.CopyBandwidth(threads: 2, megabytes: 16);
        Assert.That(rate, Is.GreaterThan(1e8).And.LessThan(1e13));
    }
}
