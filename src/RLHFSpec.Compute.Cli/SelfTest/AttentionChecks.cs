using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Cli.SelfTest;

/// <summary>attention: decode over an fp16 paged cache, and tree verification with a tree mask, against the reference.</summary>
internal static class AttentionChecks
{
    private const double Tolerance = 1e-4; // absolute, plus the same relative: fp32 accumulation orders differ

    public static IEnumerable<KernelCheck> All()
    {
        yield return new KernelCheck("attention", "decode, 8 samples, contexts 1..600, 14/2 heads x 64, fp16 KV",
            (ComputeBackend b, Random r, out string a) => Run(b, r, KvDType.F16, tree: false, out a));
        yield return new KernelCheck("attention", "tree verify, 4 samples x 9 nodes, 8/8 heads x 32, fp32 KV",
            (ComputeBackend b, Random r, out string a) => Run(b, r, KvDType.F32, tree: true, out a));
    }

    private static string? Run(ComputeBackend backend, Random random, KvDType dtype, bool tree, out string agreement)
    {
        agreement = "";
        int samples = tree ? 4 : 8, heads = tree ? 8 : 14, kvHeads = tree ? 8 : 2, headDim = tree ? 32 : 64, blockSize = 16;
        int newTokens = tree ? 9 : 1;
        var contexts = Enumerable.Range(0, samples).Select(_ => random.Next(1, 600)).ToArray();
        int maxBlocks = (contexts.Max() + newTokens + blockSize - 1) / blockSize;
        var layout = new KvLayout(samples * maxBlocks, blockSize, kvHeads, headDim, dtype);
        var tables = Enumerable.Range(0, layout.NumBlocks).OrderBy(_ => random.Next()).ToArray();
        var offsets = Enumerable.Range(0, samples + 1).Select(s => s * newTokens).ToArray();
        var mask = Array.Empty<uint>();
        if (tree)
        {
            mask = new uint[samples * newTokens];
            for (int s = 0; s < samples; s++)
                for (int j = 0; j < newTokens; j++)
                {
                    int parent = j == 0 ? -1 : random.Next(0, j);
                    mask[s * newTokens + j] = (1u << j) | (parent < 0 ? 0 : mask[s * newTokens + parent]);
                }
        }
        int tokens = samples * newTokens;
        var query = Enumerable.Range(0, tokens * heads * headDim).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var keys = CacheWords(random, layout);
        var values = CacheWords(random, layout);
        var batch = new AttentionBatch
        {
            QueryOffsets = offsets, ContextLens = contexts, BlockTables = tables, MaxBlocksPerSample = maxBlocks,
            TreeMask = mask, MaskWords = tree ? 1 : 0, NumHeads = heads, Scale = 1f / MathF.Sqrt(headDim),
        };
        var expected = new float[query.Length];
        ReferenceAttention.Compute(batch, query, keys, values, layout, expected);

        using var q = backend.Allocate<float>(query.Length, "query");
        using var k = backend.Allocate<uint>(keys.Length, "keys");
        using var v = backend.Allocate<uint>(values.Length, "values");
        using var o = backend.Allocate<float>(query.Length, "output");
        q.Write(query);
        k.Write(keys);
        v.Write(values);
        backend.Attention(batch, q, k, v, layout, o);
        var actual = o.ToArray();
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(actual[i] - expected[i]);
            worst = Math.Max(worst, error);
            if (!(error <= Tolerance * (1 + Math.Abs(expected[i]))))
                return $"output[{i}] = {actual[i]}, reference {expected[i]}";
        }
        agreement = $"max |error| {worst:0.0e+0} over {expected.Length} outputs";
        return null;
    }

    private static uint[] CacheWords(Random random, KvLayout layout)
    {
        var words = new uint[layout.TotalWords];
        for (long w = 0; w < words.Length; w++)
        {
            float a = (float)(random.NextDouble() * 2 - 1), b = (float)(random.NextDouble() * 2 - 1);
            words[w] = layout.DType == KvDType.F32
                ? BitConverter.SingleToUInt32Bits(a)
                : BitConverter.HalfToUInt16Bits((Half)a) | ((uint)BitConverter.HalfToUInt16Bits((Half)b) << 16);
        }
        return words;
    }
}
