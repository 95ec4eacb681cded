using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Reference;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>Small random decoders and helpers shared by the transformer runtime tests.</summary>
internal static class TransformerTestModels
{
    /// <summary>A tiny Llama (tied head, no biases) or Qwen2 (untied head, q/k/v biases) config with GQA.</summary>
    public static ModelConfig Config(string type, int vocab = 37, int layers = 2, int maxPositions = 256) => new()
    {
        ModelType = type,
        VocabSize = vocab,
        HiddenSize = 32,
        IntermediateSize = 48,
        NumHiddenLayers = layers,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        RopeTheta = type == "qwen2" ? 1e6 : 10000,
        RmsNormEps = 1e-6,
        MaxPositionEmbeddings = maxPositions,
        TieWordEmbeddings = type == "llama",
    };

    /// <summary>Random weights large enough that logits are O(1) (biases random too, so they are tested).</summary>
    public static TransformerWeights Weights(ModelConfig config, int seed)
    {
        var weights = TransformerWeights.Random(config, seed, std: 0.3);
        var random = new Random(seed + 1);
        foreach (var name in weights.Arena.Names.Where(n => n.EndsWith(".bias", StringComparison.Ordinal) || n.Contains("norm", StringComparison.Ordinal)))
        {
            var span = weights.Arena.Span(name);
            for (int i = 0; i < span.Length; i++) span[i] = (float)(name.Contains("norm", StringComparison.Ordinal) ? 0.5 + random.NextDouble() : random.NextDouble() - 0.5);
        }
        return weights;
    }

    public static ReferenceLlama ReferenceOf(TransformerWeights weights)
    {
        var c = weights.Config;
        var dims = new ReferenceLlama.Dims(c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads,
            c.NumKeyValueHeads, c.HeadDim, c.RmsNormEps, c.RopeTheta, c.TieWordEmbeddings, c.HasQkvBias);
        return new ReferenceLlama(dims, name => weights.Arena.Span(name).ToArray());
    }

    /// <summary>
    /// One forward of several samples (ids, per-sample tokens and parents); every token's logits row is requested.
    /// Reserves first (asserting it succeeds); returns the logits [T, V] in feeding order.
    /// </summary>
    public static float[][] Forward(TransformerModel model, long[] ids, int[][] tokens, int[][] parents)
    {
        var offsets = new int[ids.Length + 1];
        for (int b = 0; b < ids.Length; b++)
        {
            Assert.That(model.TryReserve(ids[b], tokens[b].Length), Is.True, $"reserve {tokens[b].Length} for sample {ids[b]}");
            offsets[b + 1] = offsets[b] + tokens[b].Length;
        }
        int total = offsets[^1], vocab = model.VocabSize;
        using var logits = model.Backend.Allocate<float>(Math.Max(1, (long)total * vocab), "test logits");
        model.Forward(new ForwardBatch
        {
            SampleIds = ids,
            TokenOffsets = offsets,
            Tokens = tokens.SelectMany(t => t).ToArray(),
            Parents = parents.SelectMany(p => p).ToArray(),
            LogitRows = Enumerable.Range(0, total).ToArray(),
        }, logits);
        var host = logits.ToArray();
        return Enumerable.Range(0, total).Select(t => host.AsSpan(t * vocab, vocab).ToArray()).ToArray();
    }

    /// <summary>Chain parents for <paramref name="n"/> tokens fed after <paramref name="prior"/> tentative ones.</summary>
    public static int[] Chain(int n, int prior = 0) => Enumerable.Range(0, n).Select(j => prior + j - 1).ToArray();

    /// <summary>Prefills and commits <paramref name="tokens"/> for one sample.</summary>
    public static float[][] Prefill(TransformerModel model, long id, int[] tokens)
    {
        var logits = Forward(model, [id], [tokens], [Chain(tokens.Length)]);
        model.Commit(id, Enumerable.Range(0, tokens.Length).ToArray());
        return logits;
    }

    public static int[] RandomTokens(Random random, int n, int vocab) => Enumerable.Range(0, n).Select(_ => random.Next(vocab)).ToArray();

    /// <summary>max |a − b| over a row, relative to 1 + max |b|.</summary>
    public static double Error(IReadOnlyList<float> actual, IReadOnlyList<double> expected)
    {
        double err = 0, scale = 1;
        for (int i = 0; i < expected.Count; i++)
        {
            err = Math.Max(err, Math.Abs(actual[i] - expected[i]));
            scale = Math.Max(scale, 1 + Math.Abs(expected[i]));
        }
        return err / scale;
    }

    public static void AssertClose(IReadOnlyList<float> actual, IReadOnlyList<double> expected, double tolerance, string what) =>
        Assert.That(Error(actual, expected), Is.LessThanOrEqualTo(tolerance), what);

    public static void AssertClose(IReadOnlyList<float> actual, IReadOnlyList<float> expected, double tolerance, string what) =>
        AssertClose(actual, expected.Select(v => (double)v).ToArray(), tolerance, what);

    public static TransformerModel NewModel(TransformerWeights weights, ComputeBackend backend, int blockSize = 4, long budget = 1 << 20,
        Compute.Engine.Kernels.KvDType dtype = Compute.Engine.Kernels.KvDType.F32, DenseExecutorKind dense = DenseExecutorKind.Onnx, bool halfWeights = false) =>
        new(weights, backend, new TransformerOptions { KvBlockSize = blockSize, KvMemoryBudgetBytes = budget, KvDType = dtype, Dense = dense, DenseHalfWeights = halfWeights });

    /// <summary>
    /// A model on the named set-up: "cpu" (CPU attention, ONNX Runtime dense layers), "managed" (CPU attention, the
    /// managed SIMD dense layers on the backend's worker pool), "vulkan" (Vulkan attention, ONNX Runtime dense layers),
    /// "vkdense" (the whole forward on the Vulkan device: its dense executor, attention and KV cache).
    /// </summary>
    public static TransformerModel NewModel(TransformerWeights weights, string setup) => setup switch
    {
        "managed" => NewModel(weights, Backends.Cpu, dense: DenseExecutorKind.Managed),
        "vkdense" => NewModel(weights, Backends.Vulkan, dense: DenseExecutorKind.Vulkan),
        _ => NewModel(weights, Backends.Get(setup)),
    };
}
