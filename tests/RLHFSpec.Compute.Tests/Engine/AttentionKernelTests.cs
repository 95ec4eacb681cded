using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// Paged attention on each backend against <see cref="ReferenceAttention"/> on fresh random inputs.
/// Tolerance: |got − want| ≤ 2e-5 + 1e-4·|want| for fp32 and fp16 caches alike (fp16 values are decoded exactly,
/// compute is fp32 everywhere; the reference runs in double).
/// </summary>
public class AttentionKernelTests
{
    private const double Abs = 2e-5, Rel = 1e-4;

    public enum Mask { Causal, Chain, Wide, Deep, Random }

    /// <summary>One random problem: metadata, cache contents and queries.</summary>
    private sealed class Problem
    {
        public required int[] QueryOffsets, ContextLens, BlockTables;
        public required uint[] TreeMask;
        public required int MaskWords, MaxBlocks, NumHeads;
        public required float Scale;
        public required KvLayout Layout;
        public required float[] Query;
        public required uint[] Keys, Values;

        public AttentionBatch Batch => new()
        {
            QueryOffsets = QueryOffsets, ContextLens = ContextLens, BlockTables = BlockTables, MaxBlocksPerSample = MaxBlocks,
            TreeMask = TreeMask, MaskWords = MaskWords, NumHeads = NumHeads, Scale = Scale,
        };

        public int NumTokens => QueryOffsets[^1];
    }

    /// <summary>Parent of each node of a draft tree (−1: child of the committed context), parents before children.</summary>
    private static int[] Parents(Mask shape, int n, Random rng)
    {
        var parents = new int[n];
        for (int j = 0; j < n; j++)
            parents[j] = shape switch
            {
                Mask.Chain => j - 1,
                Mask.Wide => j == 0 ? -1 : rng.Next(0, Math.Min(j, 2)),        // root and a fan of children
                Mask.Deep => j < 2 ? j - 1 : j - 1 - rng.Next(0, Math.Min(j, 3)), // mostly a chain, some branches
                _ => rng.Next(-1, j),
            };
        return parents;
    }

    private static Problem Make(int seed, int[] contexts, int[] newTokens, int headDim, int numKvHeads, int groupRatio,
        int blockSize, KvDType dtype, Mask mask, int extraMaskWords = 0)
    {
        var rng = new Random(seed);
        int samples = contexts.Length;
        var offsets = new int[samples + 1];
        for (int s = 0; s < samples; s++) offsets[s + 1] = offsets[s] + newTokens[s];
        int numTokens = offsets[^1];
        int maxBlocks = 1, totalBlocks = 0;
        for (int s = 0; s < samples; s++)
        {
            int blocks = (contexts[s] + newTokens[s] + blockSize - 1) / blockSize;
            maxBlocks = Math.Max(maxBlocks, blocks + rng.Next(0, 2));
            totalBlocks += blocks;
        }
        // Physical blocks shuffled (non-contiguous), with spare blocks that no sample owns.
        int numBlocks = totalBlocks + 3;
        var physical = Enumerable.Range(0, numBlocks).OrderBy(_ => rng.Next()).ToArray();
        var tables = new int[samples * maxBlocks];
        int next = 0;
        for (int s = 0; s < samples; s++)
        {
            int blocks = (contexts[s] + newTokens[s] + blockSize - 1) / blockSize;
            for (int b = 0; b < maxBlocks; b++)
                // Unused entries may be anything ≥ 0: make them out of range so reading one would fail loudly.
                tables[s * maxBlocks + b] = b < blocks ? physical[next++] : int.MaxValue - rng.Next(100);
        }

        int maskWords = 0;
        uint[] treeMask = [];
        if (mask != Mask.Causal)
        {
            int maxNew = newTokens.DefaultIfEmpty(0).Max();
            maskWords = Math.Max(1, (maxNew + 31) / 32) + extraMaskWords;
            treeMask = new uint[numTokens * maskWords];
            for (int s = 0; s < samples; s++)
            {
                var parents = Parents(mask, newTokens[s], rng);
                for (int i = 0; i < newTokens[s]; i++)
                {
                    var row = treeMask.AsSpan((offsets[s] + i) * maskWords, maskWords);
                    if (parents[i] >= 0) treeMask.AsSpan((offsets[s] + parents[i]) * maskWords, maskWords).CopyTo(row);
                    row[i / 32] |= 1u << (i % 32);
                }
            }
        }

        var layout = new KvLayout(numBlocks, blockSize, numKvHeads, headDim, dtype);
        int numHeads = numKvHeads * groupRatio;
        var query = new float[numTokens * numHeads * headDim];
        for (int e = 0; e < query.Length; e++) query[e] = (float)(rng.NextDouble() * 2 - 1);
        return new Problem
        {
            QueryOffsets = offsets, ContextLens = contexts, BlockTables = tables, TreeMask = treeMask, MaskWords = maskWords,
            MaxBlocks = maxBlocks, NumHeads = numHeads, Layout = layout, Query = query,
            // Scales above 1/sqrt(d) make the softmax peaky, as trained models do.
            Scale = (float)((0.5 + 2.5 * rng.NextDouble()) / Math.Sqrt(headDim)),
            Keys = RandomCache(layout, rng), Values = RandomCache(layout, rng),
        };
    }

    private static uint[] RandomCache(KvLayout layout, Random rng)
    {
        var words = new uint[layout.TotalWords];
        for (int w = 0; w < words.Length; w++)
        {
            if (layout.DType == KvDType.F32)
                words[w] = BitConverter.SingleToUInt32Bits((float)(rng.NextDouble() * 2 - 1));
            else
            {
                uint lo = BitConverter.HalfToUInt16Bits((Half)(rng.NextDouble() * 2 - 1));
                uint hi = BitConverter.HalfToUInt16Bits((Half)(rng.NextDouble() * 2 - 1));
                words[w] = lo | hi << 16;
            }
        }
        return words;
    }

    private static float[] Run(ComputeBackend backend, Problem p)
    {
        int elements = p.NumTokens * p.NumHeads * p.Layout.HeadDim;
        using var query = backend.Allocate<float>(Math.Max(elements, 1), "query");
        using var keys = backend.Allocate<uint>(p.Keys.Length, "keys");
        using var values = backend.Allocate<uint>(p.Values.Length, "values");
        using var output = backend.Allocate<float>(Math.Max(elements, 1), "output");
        query.Write(p.Query);
        keys.Write(p.Keys);
        values.Write(p.Values);
        // Poison the output so rows the kernel forgets to write are caught.
        output.Write(Enumerable.Repeat(float.NaN, elements).ToArray());
        backend.Attention(p.Batch, query, keys, values, p.Layout, output);
        var result = new float[elements];
        output.Read(result);
        return result;
    }

    private static void Check(string backendName, Problem p) => Check(Backends.Get(backendName), backendName, p);

    private static void Check(ComputeBackend backend, string backendName, Problem p)
    {
        var got = Run(backend, p);
        var want = new float[got.Length];
        ReferenceAttention.Compute(p.Batch, p.Query, p.Keys, p.Values, p.Layout, want);
        int d = p.Layout.HeadDim;
        for (int e = 0; e < want.Length; e++)
        {
            double err = Math.Abs(got[e] - want[e]);
            if (!(err <= Abs + Rel * Math.Abs(want[e])))
            {
                int t = e / (p.NumHeads * d), h = e / d % p.NumHeads;
                Assert.Fail($"{backendName}: output[token {t}, head {h}, dim {e % d}] = {got[e]}, reference {want[e]} (|err| {err:g3})");
            }
        }
    }

    private static readonly string[] BackendNames = ["cpu", "vulkan"];

    // Decode: one new token per sample, contexts around block boundaries.
    [Test, Combinatorial]
    public void DecodeMatchesReference([ValueSource(nameof(BackendNames))] string backend, [Values(32, 64, 80, 128)] int headDim,
        [Values(1, 2, 4, 8)] int groupRatio, [Values(KvDType.F32, KvDType.F16)] KvDType dtype)
    {
        int blockSize = headDim == 80 ? 7 : headDim == 32 ? 32 : 16;
        int[] contexts = [0, 1, blockSize - 1, blockSize, blockSize + 1, 37, 2 * blockSize + 3, 0];
        int seed = headDim * 100 + groupRatio * 10 + (int)dtype;
        Check(backend, Make(seed, contexts, contexts.Select(_ => 1).ToArray(), headDim, Math.Max(1, 8 / groupRatio), groupRatio, blockSize, dtype, Mask.Causal));
    }

    // Prefill: causal over many new tokens, with and without committed context.
    [TestCase("cpu", 0, 1, KvDType.F32, 16), TestCase("vulkan", 0, 1, KvDType.F32, 16)]
    [TestCase("cpu", 1, 2, KvDType.F16, 32), TestCase("vulkan", 1, 2, KvDType.F16, 32)]
    [TestCase("cpu", 2, 4, KvDType.F32, 1), TestCase("vulkan", 2, 4, KvDType.F32, 1)]
    [TestCase("cpu", 3, 8, KvDType.F16, 7), TestCase("vulkan", 3, 8, KvDType.F16, 7)]
    public void PrefillMatchesReference(string backend, int seed, int groupRatio, KvDType dtype, int blockSize)
    {
        int[] contexts = [0, 15, 33];
        int[] newTokens = [200, 31, 65];
        Check(backend, Make(seed, contexts, newTokens, 64, groupRatio == 8 ? 1 : 2, groupRatio, blockSize, dtype, Mask.Causal));
    }

    // Tree verification: masks from parent arrays of several shapes, over short and long contexts.
    [Test, Combinatorial]
    public void TreeMatchesReference([ValueSource(nameof(BackendNames))] string backend,
        [Values(Mask.Chain, Mask.Wide, Mask.Deep, Mask.Random)] Mask shape, [Values(KvDType.F32, KvDType.F16)] KvDType dtype)
    {
        int seed = 1000 + (int)shape * 10 + (int)dtype;
        int[] contexts = [0, 16, 17, 600, 5];
        int[] newTokens = [6, 40, 1, 9, 64];
        Check(backend, Make(seed, contexts, newTokens, 128, 2, 4, 16, dtype, shape));
    }

    [TestCase("cpu"), TestCase("vulkan")]
    public void TreeMaskWithSpareWordsMatchesReference(string backend) =>
        Check(backend, Make(77, [3, 40], [5, 9], 32, 1, 2, 16, KvDType.F32, Mask.Random, extraMaskWords: 2));

    // Many seeds on small random shapes: every path (GQA, dtype, mask, odd blocks) with fresh inputs.
    [Test]
    public void RandomShapesMatchReference([ValueSource(nameof(BackendNames))] string backend, [Range(0, 11)] int seed)
    {
        var rng = new Random(5000 + seed);
        int samples = rng.Next(1, 6);
        int[] contexts = Enumerable.Range(0, samples).Select(_ => rng.Next(0, 3) == 0 ? 0 : rng.Next(0, 90)).ToArray();
        int[] newTokens = Enumerable.Range(0, samples).Select(_ => rng.Next(0, 4) == 0 ? 0 : rng.Next(1, 40)).ToArray();
        int headDim = new[] { 32, 64, 80, 128 }[rng.Next(4)];
        int ratio = new[] { 1, 2, 4, 8 }[rng.Next(4)];
        int blockSize = new[] { 1, 7, 16, 32 }[rng.Next(4)];
        var mask = (Mask)rng.Next(5);
        Check(backend, Make(seed, contexts, newTokens, headDim, rng.Next(1, 3), ratio, blockSize, (KvDType)rng.Next(2), mask));
    }

    // A big decode batch: 256 samples, one token each.
    [TestCase("cpu"), TestCase("vulkan")]
    public void LargeDecodeBatchMatchesReference(string backend)
    {
        var rng = new Random(256);
        int[] contexts = Enumerable.Range(0, 256).Select(_ => rng.Next(0, 70)).ToArray();
        Check(backend, Make(9, contexts, Enumerable.Repeat(1, 256).ToArray(), 64, 2, 4, 16, KvDType.F16, Mask.Causal));
    }

    // One long context: 8192 committed tokens, a few new ones.
    [TestCase("cpu", KvDType.F32), TestCase("vulkan", KvDType.F16), TestCase("cpu", KvDType.F16), TestCase("vulkan", KvDType.F32)]
    public void LongContextMatchesReference(string backend, KvDType dtype) =>
        Check(backend, Make(8192, [8192], [3], 128, 1, 4, 32, dtype, Mask.Causal));

    // Few (token, KV head) items and long contexts on pools of several sizes (the CPU backend does not split a context
    // over workers: see CpuTokenAttendsAlikeAloneAndInABatch).
    [TestCase(8, 1, 3000), TestCase(3, 2, 1500), TestCase(16, 1, 1100)]
    public void CpuSplitLongContextMatchesReference(int threads, int newTokens, int context)
    {
        using var cpu = new RLHFSpec.Compute.Engine.Cpu.CpuBackend(threads);
        Check(cpu, $"cpu({threads} threads)", Make(threads, [context, 0], [newTokens, 0], 64, 1, 4, 16, KvDType.F16, Mask.Causal));
        Check(cpu, $"cpu({threads} threads)", Make(threads + 1, [context], [newTokens], 64, 1, 2, 16, KvDType.F32, Mask.Chain));
    }

    // The CPU backend's two work paths: on the calling thread (small steps) and on its workers (a long prefill), both
    // sides of the serial threshold against the reference.
    [TestCase(16), TestCase(256)]
    public void CpuSerialAndParallelPathsMatchReference(int prefillTokens)
    {
        var p = Make(5, [3, 0], [prefillTokens, 9], 64, 2, 4, 16, KvDType.F32, Mask.Causal);
        Check(Backends.Cpu, "cpu", p);
    }

    // Key ranges split over workgroups with a merge pass, where some tokens' later splits are empty (short samples
    // beside a long one): their partials carry max = −inf and must weigh nothing.
    [TestCase(KvDType.F16, Mask.Causal), TestCase(KvDType.F32, Mask.Random)]
    public void VulkanSplitKeysWithEmptySplitsMatchReference(KvDType dtype, Mask mask) =>
        Check("vulkan", Make(31, [2500, 0, 10], [2, 5, 3], 128, 1, 8, 16, dtype, mask));

    // One layer's cache is bound whole: a cache over the device's binding range is refused with a clear error.
    [Test]
    public void VulkanCacheOverBindingRangeIsAComputeError()
    {
        var vk = Backends.Vulkan;
        var p = Make(41, [5], [1], 64, 8, 1, 16, KvDType.F32, Mask.Causal);
        long blockBytes = (long)p.Layout.BlockWords * 4;
        var huge = p.Layout with { NumBlocks = (int)(vk.Info.Limits.MaxStorageBufferRange / blockBytes) + 1 };
        if (huge.TotalWords * 4 > 512L << 20) Assert.Ignore($"binding range {vk.Info.Limits.MaxStorageBufferRange} bytes: too big a cache to allocate in a test");
        int elements = p.NumTokens * p.NumHeads * p.Layout.HeadDim;
        using var query = vk.Allocate<float>(elements, "query");
        using var output = vk.Allocate<float>(elements, "output");
        using var cache = vk.Allocate<uint>(huge.TotalWords, "cache");   // K and V may share a buffer
        var e = Assert.Throws<ComputeException>(() => vk.Attention(p.Batch, query, cache, cache, huge, output));
        Assert.That(e!.Message, Does.Contain("maxStorageBufferRange"));
    }

    // Samples without query tokens (between others, and at both ends) are skipped; zero-context tokens see themselves.
    [TestCase("cpu"), TestCase("vulkan")]
    public void EmptySamplesAreSkipped(string backend) =>
        Check(backend, Make(3, [5, 0, 9, 0], [0, 1, 0, 2], 64, 1, 2, 16, KvDType.F32, Mask.Causal));

    // Batch invariance on the CPU: every token of a tree verification or a prefill (many tokens, several work items
    // and tiles, samples beside it) attends bit for bit as the same token decoded alone over the same keys — what
    // greedy speculative output equal to plain greedy output rests on. Block size 1 lets the single-token problem
    // list exactly the token's visible slots (context, then its ancestors in order, then itself) as its context.
    [Test, Combinatorial]
    public void CpuTokenAttendsAlikeAloneAndInABatch([Values(Mask.Causal, Mask.Deep, Mask.Random)] Mask shape,
        [Values(KvDType.F32, KvDType.F16)] KvDType dtype, [Values(32, 36)] int headDim, [Values(2, 3)] int group, [Values(1, 3)] int threads)
    {
        using var cpu = new RLHFSpec.Compute.Engine.Cpu.CpuBackend(threads);
        var p = Make(7 + (int)shape, [0, 45, 130], [20, 40, 3], headDim, 2, group, 1, dtype, shape);
        var batched = Run(cpu, p);
        int d = p.Layout.HeadDim, rowFloats = p.NumHeads * d;
        for (int s = 0; s < p.ContextLens.Length; s++)
            for (int i = 0; i < p.QueryOffsets[s + 1] - p.QueryOffsets[s]; i++)
            {
                int t = p.QueryOffsets[s] + i, context = p.ContextLens[s];
                var slots = new List<int>();
                for (int logical = 0; logical < context; logical++) slots.Add(p.BlockTables[s * p.MaxBlocks + logical]);
                for (int j = 0; j < i; j++)
                {
                    bool sees = shape == Mask.Causal || (p.TreeMask[t * p.MaskWords + j / 32] >> (j % 32) & 1) != 0;
                    if (sees) slots.Add(p.BlockTables[s * p.MaxBlocks + context + j]);
                }
                slots.Add(p.BlockTables[s * p.MaxBlocks + context + i]);
                var alone = new Problem
                {
                    QueryOffsets = [0, 1], ContextLens = [slots.Count - 1], BlockTables = slots.ToArray(), TreeMask = [], MaskWords = 0,
                    MaxBlocks = slots.Count, NumHeads = p.NumHeads, Layout = p.Layout, Scale = p.Scale,
                    Query = p.Query.AsSpan(t * rowFloats, rowFloats).ToArray(), Keys = p.Keys, Values = p.Values,
                };
                var single = Run(cpu, alone);
                for (int e = 0; e < rowFloats; e++)
                    if (BitConverter.SingleToUInt32Bits(single[e]) != BitConverter.SingleToUInt32Bits(batched[t * rowFloats + e]))
                        Assert.Fail($"sample {s} token {i} head {e / d} dim {e % d}: {batched[t * rowFloats + e]:R} in the batch, {single[e]:R} alone");
            }
    }

    // An fp16 cache attends bit for bit as an fp32 cache holding the same values widened: the CPU converts halves
    // exactly, either in registers where the FMAs use them (one token, a group of one or two heads: decode) or into
    // fp32 rows shared by a tile's rows (otherwise), and then does the fp32 path's arithmetic in the fp32 path's order.
    [Test, Combinatorial]
    public void CpuHalfCacheAttendsAsItsWidenedValues([Values(Mask.Causal, Mask.Random)] Mask shape, [Values(1, 7)] int newTokens,
        [Values(32, 36, 80)] int headDim, [Values(1, 2, 3)] int group, [Values(0, 1)] int seed)
    {
        using var cpu = new RLHFSpec.Compute.Engine.Cpu.CpuBackend(1 + seed);
        var half = Make(41 + seed, [0, 37, 300], [1, newTokens, 1], headDim, 2, group, 16, KvDType.F16, shape);
        var wide = WidenedTwin(half);
        var got = Run(cpu, half);
        var want = Run(cpu, wide);
        for (int e = 0; e < got.Length; e++)
            if (BitConverter.SingleToUInt32Bits(got[e]) != BitConverter.SingleToUInt32Bits(want[e]))
                Assert.Fail($"output[{e}]: {got[e]:R} from the fp16 cache, {want[e]:R} from its fp32 twin");
    }

    // Inf and NaN in an fp16 cache: the chunks that hold them are converted exactly instead of read in place, and
    // every output is as from the widened fp32 twin (NaN where the twin's is NaN, the same bits elsewhere).
    [Test]
    public void CpuHalfCacheWithInfAndNaNAttendsAsItsWidenedValues([Values(1, 2)] int group, [Values(0, 1, 2)] int seed)
    {
        using var cpu = new RLHFSpec.Compute.Engine.Cpu.CpuBackend(2);
        var half = Make(53 + seed, [20, 37, 300], [1, 1, 1], 32, 2, group, 16, KvDType.F16, Mask.Causal);
        var clean = Run(cpu, half);
        var rng = new Random(seed);
        ushort[] specials = [0x7C00, 0xFC00, 0x7E00, 0xFD01];   // +Inf, −Inf, NaN, NaN with a payload
        // A few words of slots that sample 1 sees (context 37 and its new token) only; samples 0 and 2 share no block with it.
        for (int k = 0; k < 3; k++)
        {
            int logical = rng.Next(38), bs = half.Layout.BlockSize;
            int slot = half.BlockTables[1 * half.MaxBlocks + logical / bs] * bs + logical % bs;
            long word = (long)slot * half.Layout.RowWords + rng.Next(half.Layout.RowWords);
            uint[] cache = k == 1 ? half.Values : half.Keys;
            cache[word] = (cache[word] & 0xFFFF0000u) | specials[rng.Next(specials.Length)];
        }
        var wide = WidenedTwin(half);
        var got = Run(cpu, half);
        var want = Run(cpu, wide);
        int changed = 0;
        for (int e = 0; e < got.Length; e++)
        {
            if (BitConverter.SingleToUInt32Bits(want[e]) != BitConverter.SingleToUInt32Bits(clean[e])) changed++;
            bool same = float.IsNaN(want[e]) ? float.IsNaN(got[e]) : BitConverter.SingleToUInt32Bits(got[e]) == BitConverter.SingleToUInt32Bits(want[e]);
            if (!same) Assert.Fail($"output[{e}]: {got[e]:R} from the fp16 cache, {want[e]:R} from its fp32 twin");
        }
        Assert.That(changed, Is.GreaterThan(0), "the planted Inf/NaN should change some output");
    }

    // The fp16 loads leave out 2^112 and the query rows (per tile) or the probabilities (per item) carry it instead,
    // which is exact only while |q| < 2^16: queries at 65536 and beyond (tiles that must take the unscaled path), just
    // under 2^16 (scaled to ±the largest float), subnormal, −0 and NaN, against caches full of fp16 subnormals, ±0 and
    // ±65504, all attend bit for bit as the widened fp32 twin. Head dim 36 runs the scalar tail loads too.
    [Test, Combinatorial]
    public void CpuHalfCacheWithExtremeValuesAttendsAsItsWidenedValues([Values(1, 2, 3)] int group, [Values(1, 7)] int newTokens,
        [Values(32, 36)] int headDim, [Values(0, 1)] int seed)
    {
        using var cpu = new RLHFSpec.Compute.Engine.Cpu.CpuBackend(1 + seed);
        var half = Make(61 + seed, [0, 37, 300, 20, 5], [1, newTokens, 1, 1, 1], headDim, 2, group, 16, KvDType.F16, Mask.Random);
        var rng = new Random(seed);
        ushort[] edges = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x83FF, 0x0400, 0x8400, 0x7BFF, 0xFBFF];
        foreach (uint[] cache in new[] { half.Keys, half.Values })
            for (int w = 0; w < cache.Length; w++)
            {
                // A third of the halves extreme: a fixed edge or a random subnormal of either sign.
                uint lo = rng.Next(3) == 0 ? Edge() : cache[w] & 0xFFFF, hi = rng.Next(3) == 0 ? Edge() : cache[w] >> 16;
                cache[w] = lo | hi << 16;
            }
        int rowFloats = half.NumHeads * headDim;
        float below = MathF.BitDecrement(65536f);
        float[] scaledOk = [below, -below, 32768f, float.Epsilon, -float.Epsilon, -0f, 1e-30f, 1.1754942e-38f];
        float[] tooLarge = [65536f, -65536f, 1e5f];
        // Decode tokens are a tile each: sample 0's has too large an element (unscaled scores), sample 3's only
        // elements that scale exactly (to ±the largest float), sample 4's a NaN among them (unscaled: NaN outputs
        // in its head). Sample 1's tokens share a tile: all of them exact, or (seed 1) its last one too large.
        Plant(0, tooLarge);
        Plant(half.QueryOffsets[3], scaledOk);
        Plant(half.QueryOffsets[4], scaledOk);
        half.Query[half.QueryOffsets[4] * rowFloats + rng.Next(rowFloats)] = float.NaN;
        for (int t = half.QueryOffsets[1]; t < half.QueryOffsets[2]; t++)
            Plant(t, seed == 1 && t == half.QueryOffsets[2] - 1 ? tooLarge : scaledOk);

        var got = Run(cpu, half);
        var want = Run(cpu, WidenedTwin(half));
        int nan = 0;
        for (int e = 0; e < got.Length; e++)
        {
            if (float.IsNaN(want[e])) { nan++; Assert.That(float.IsNaN(got[e]), $"output[{e}]: {got[e]:R}, NaN from the fp32 twin"); }
            else if (BitConverter.SingleToUInt32Bits(got[e]) != BitConverter.SingleToUInt32Bits(want[e]))
                Assert.Fail($"output[{e}] (token {e / rowFloats}): {got[e]:R} from the fp16 cache, {want[e]:R} from its fp32 twin");
        }
        Assert.That(nan, Is.LessThan(got.Length / 2), "most outputs should be numbers");

        uint Edge() => rng.Next(2) == 0 ? edges[rng.Next(edges.Length)] : (uint)rng.Next(1, 0x400) | (uint)rng.Next(2) << 15;

        void Plant(int token, float[] pool)
        {
            for (int k = 0; k < 6; k++) half.Query[token * rowFloats + rng.Next(rowFloats)] = pool[rng.Next(pool.Length)];
        }
    }

    /// <summary>The same problem over an fp32 cache holding the fp16 cache's values widened.</summary>
    private static Problem WidenedTwin(Problem half) => new()
    {
        QueryOffsets = half.QueryOffsets, ContextLens = half.ContextLens, BlockTables = half.BlockTables, TreeMask = half.TreeMask,
        MaskWords = half.MaskWords, MaxBlocks = half.MaxBlocks, NumHeads = half.NumHeads, Scale = half.Scale, Query = half.Query,
        Layout = half.Layout with { DType = KvDType.F32 }, Keys = Widen(half.Keys), Values = Widen(half.Values),
    };

    private static uint[] Widen(uint[] words) => words.SelectMany(w => new[]
    {
        BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf((ushort)w)),
        BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf((ushort)(w >> 16))),
    }).ToArray();

    // The softmax's exp (the row kernels' CpuRowMath.Exp): within 2 ulp-ish (2.5e-7 relative) of the double exp over
    // the range it sees and a little beyond, exactly 0 for −∞ and below −87, 1 at 0.
    [Test]
    public void CpuSoftmaxExpMatchesTheDoubleExp()
    {
        var xs = new List<float> { float.NegativeInfinity, -1000f, -87.4f, -87.01f, -86.99f, -50f, -1e-7f, 0f, 1e-7f, 1f, 10f, 88f };
        var rng = new Random(9);
        for (int i = 0; i < 20000; i++) xs.Add((float)(rng.NextDouble() * -90));
        while (xs.Count % 8 != 0) xs.Add(0f);
        for (int i = 0; i < xs.Count; i += 8)
        {
            var got = RLHFSpec.Compute.Engine.Cpu.CpuRowMath.Exp(System.Runtime.Intrinsics.Vector256.Create(xs.GetRange(i, 8).ToArray()));
            for (int j = 0; j < 8; j++)
            {
                float x = xs[i + j];
                double want = x < -87f ? 0 : Math.Exp(x);
                if (want == 0) Assert.That(got[j], Is.EqualTo(0f), $"exp({x})");
                else Assert.That(got[j], Is.EqualTo(want).Within(2.5e-7 * want), $"exp({x})");
            }
        }
        Assert.That(RLHFSpec.Compute.Engine.Cpu.CpuRowMath.Exp(System.Runtime.Intrinsics.Vector256<float>.Zero)[0], Is.EqualTo(1f));
    }

    // The CPU backend's own fp16 → fp32 conversion, over every half bit pattern (subnormals, ±0, ±Inf, NaN).
    [Test]
    public void HalfToSingleIsExactForEveryHalf()
    {
        var halves = new Half[65536 + 5];   // a tail that is not a multiple of 16
        for (int i = 0; i < halves.Length; i++) halves[i] = BitConverter.UInt16BitsToHalf((ushort)i);
        var floats = new float[halves.Length];
        RLHFSpec.Compute.Engine.Cpu.CpuBackend.HalfToSingle(halves, floats);
        for (int i = 0; i < halves.Length; i++)
        {
            float want = (float)halves[i];
            if (float.IsNaN(want)) Assert.That(float.IsNaN(floats[i]), $"half 0x{i:X4} → {floats[i]}");
            else if (BitConverter.SingleToUInt32Bits(floats[i]) != BitConverter.SingleToUInt32Bits(want))
                Assert.Fail($"half 0x{i & 0xFFFF:X4}: got {floats[i]}, want {want}");
        }
    }

    // The in-place decode loads' conversion, over every finite half bit pattern (±0, subnormals, normals, ±65504).
    [Test]
    public unsafe void FiniteHalfToSingleIsExactForEveryFiniteHalf()
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) Assert.Ignore("the in-place fp16 loads need AVX2");
        var bits = new short[65536];
        for (int i = 0; i < bits.Length; i++) bits[i] = (short)i;
        var floats = new float[8];
        fixed (short* source = bits)
            for (int i = 0; i < bits.Length; i += 8)
            {
                System.Runtime.Intrinsics.Vector256.CopyTo(RLHFSpec.Compute.Engine.Cpu.CpuBackend.FiniteHalfToSingle8(source + i), floats);
                for (int j = 0; j < 8; j++)
                {
                    float want = (float)BitConverter.Int16BitsToHalf(bits[i + j]);
                    if (float.IsFinite(want) && BitConverter.SingleToUInt32Bits(floats[j]) != BitConverter.SingleToUInt32Bits(want))
                        Assert.Fail($"half 0x{i + j:X4}: got {floats[j]}, want {want}");
                }
            }
    }

    // The conversion that leaves out the 2^112 rebias (fp16 rows whose other factor carries it), over every half bit
    // pattern: finite halves come out as exactly 2^−112 × their value (subnormals as fp32 subnormals), Inf and NaN with
    // HalfToSingle's bits; the in-place loads' 8-wide form agrees on every finite half.
    [Test]
    public unsafe void HalfToScaledSingleIsTheValueTimesTwoToTheMinus112()
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) Assert.Ignore("the scaled fp16 loads need AVX2");
        var bits = new short[65536 + 5];   // a tail that is not a multiple of 8
        for (int i = 0; i < bits.Length; i++) bits[i] = (short)i;
        var floats = new float[bits.Length];
        var exact = new float[bits.Length];
        var lanes = new float[8];
        RLHFSpec.Compute.Engine.Cpu.CpuBackend.HalfToSingle(bits.Select(BitConverter.Int16BitsToHalf).ToArray(), exact);
        fixed (short* source = bits)
        fixed (float* to = floats)
        {
            RLHFSpec.Compute.Engine.Cpu.CpuBackend.HalfToScaledSingle(source, to, bits.Length);
            for (int i = 0; i < bits.Length; i++)
            {
                var h = BitConverter.Int16BitsToHalf(bits[i]);
                // Signalling NaNs stay signalling in both conversions (no arithmetic touches them), unlike (float)Half.
                float want = Half.IsFinite(h) ? (float)((double)h * Math.Pow(2, -112)) : exact[i];
                if (Half.IsFinite(h) && (double)floats[i] * Math.Pow(2, 112) != (double)h)
                    Assert.Fail($"half 0x{i & 0xFFFF:X4}: got {floats[i]:R}, not 2^-112 x {(float)h:R}");
                if (BitConverter.SingleToUInt32Bits(floats[i]) != BitConverter.SingleToUInt32Bits(want))
                    Assert.Fail($"half 0x{i & 0xFFFF:X4}: got 0x{BitConverter.SingleToUInt32Bits(floats[i]):X8}, want 0x{BitConverter.SingleToUInt32Bits(want):X8}");
            }
            for (int i = 0; i + 8 <= 65536; i += 8)
            {
                System.Runtime.Intrinsics.Vector256.CopyTo(RLHFSpec.Compute.Engine.Cpu.CpuBackend.FiniteHalfToScaledSingle8(source + i), lanes);
                for (int j = 0; j < 8; j++)
                    if (Half.IsFinite(BitConverter.Int16BitsToHalf(bits[i + j])) && BitConverter.SingleToUInt32Bits(lanes[j]) != BitConverter.SingleToUInt32Bits(floats[i + j]))
                        Assert.Fail($"half 0x{i + j:X4}: 8-wide load {lanes[j]:R}, conversion {floats[i + j]:R}");
            }
        }
    }

    // The check that sends a chunk holding an Inf or NaN to the exact conversion: every half pattern, placed in the
    // vector part and in the scalar tail of a row of finite halves.
    [Test]
    public unsafe void AllFiniteFindsEveryInfAndNaN()
    {
        var row = new short[37];
        fixed (short* halves = row)
            for (int pattern = 0; pattern < 65536; pattern++)
            {
                bool finite = Half.IsFinite(BitConverter.Int16BitsToHalf((short)pattern));
                foreach (int at in new[] { pattern % 32, 32 + pattern % 5 })
                {
                    Array.Fill(row, BitConverter.HalfToInt16Bits((Half)(-0.75f)));
                    row[at] = (short)pattern;
                    if (RLHFSpec.Compute.Engine.Cpu.CpuBackend.AllFinite(halves, row.Length) != finite)
                        Assert.Fail($"half 0x{pattern:X4} at {at}: AllFinite should say {finite}");
                }
            }
    }

    // ---- Bad input: every backend rejects it before running, naming the argument. ----

    private static Problem Small(Mask mask = Mask.Random) => Make(11, [3, 20, 0], [4, 2, 5], 32, 2, 2, 8, KvDType.F32, mask);

    private static void Rejects(string backendName, Problem p, string argument, KvLayout? layoutOverride = null,
        int queryLength = -1, int outputLength = -1, int keyLength = -1, int valueLength = -1)
    {
        var backend = Backends.Get(backendName);
        int elements = Math.Max(1, p.NumTokens * p.NumHeads * p.Layout.HeadDim);
        using var query = backend.Allocate<float>(queryLength >= 0 ? queryLength : elements, "query");
        using var output = backend.Allocate<float>(outputLength >= 0 ? outputLength : elements, "output");
        using var keys = backend.Allocate<uint>(keyLength >= 0 ? keyLength : p.Keys.Length, "keys");
        using var values = backend.Allocate<uint>(valueLength >= 0 ? valueLength : p.Values.Length, "values");
        var e = Assert.Catch<ArgumentException>(() => backend.Attention(p.Batch, query, keys, values, layoutOverride ?? p.Layout, output));
        Assert.That(e!.ParamName, Is.EqualTo(argument), e.Message);
    }

    [TestCase("cpu"), TestCase("vulkan")]
    public void BadOffsetsAreRejected(string backend)
    {
        var p = Small(); p.QueryOffsets = [0, 4, 6]; Rejects(backend, p, "QueryOffsets");                 // length S + 1 expected
        p = Small(); p.QueryOffsets = [1, 4, 6, 11]; Rejects(backend, p, "QueryOffsets");                 // must start at 0
        p = Small(); p.QueryOffsets = [0, 4, 3, 11]; Rejects(backend, p, "QueryOffsets");                 // decreasing
    }

    [TestCase("cpu"), TestCase("vulkan")]
    public void BadContextsAndBlockTablesAreRejected(string backend)
    {
        var p = Small(); p.ContextLens = [3, -1, 0]; Rejects(backend, p, "ContextLens");
        p = Small(); p.ContextLens = [3, 20]; Rejects(backend, p, "QueryOffsets");                         // S from ContextLens
        p = Small(); p.ContextLens = [3, p.MaxBlocks * p.Layout.BlockSize, 0]; Rejects(backend, p, "ContextLens"); // over capacity
        p = Small(); p.BlockTables = p.BlockTables[1..]; Rejects(backend, p, "BlockTables");
        p = Small(); p.BlockTables[0] = p.Layout.NumBlocks; Rejects(backend, p, "BlockTables");
        p = Small(); p.BlockTables[p.MaxBlocks] = -1; Rejects(backend, p, "BlockTables");
        p = Small(); p.MaxBlocks = -1; Rejects(backend, p, "MaxBlocksPerSample");
    }

    [TestCase("cpu"), TestCase("vulkan")]
    public void BadHeadsAndScaleAreRejected(string backend)
    {
        var p = Small(); p.NumHeads = 3; Rejects(backend, p, "NumHeads");                                  // not a multiple of 2 KV heads
        p = Small(); p.NumHeads = 0; Rejects(backend, p, "NumHeads");
        p = Small(); p.Scale = float.NaN; Rejects(backend, p, "Scale");
        p = Small(); p.Scale = float.PositiveInfinity; Rejects(backend, p, "Scale");
    }

    [TestCase("cpu"), TestCase("vulkan")]
    public void BadTreeMasksAreRejected(string backend)
    {
        var p = Small(); p.TreeMask = p.TreeMask[1..]; Rejects(backend, p, "TreeMask");
        p = Small(); p.MaskWords = 0; Rejects(backend, p, "MaskWords");
        p = Small(); p.TreeMask[2 * p.MaskWords] &= ~(1u << 2); Rejects(backend, p, "TreeMask");          // node 2 does not see itself
        p = Small(); p.TreeMask[5 * p.MaskWords] |= 1u << 3; Rejects(backend, p, "TreeMask");             // sample 1 has 2 new tokens
        var wide = Make(12, [1], [40], 32, 1, 1, 8, KvDType.F32, Mask.Chain);
        wide.MaskWords = 1; wide.TreeMask = new uint[40]; Rejects(backend, wide, "MaskWords");              // 40 nodes need 2 words
    }

    [TestCase("cpu"), TestCase("vulkan")]
    public void SmallBuffersAndBadLayoutsAreRejected(string backend)
    {
        var p = Small();
        int elements = p.NumTokens * p.NumHeads * p.Layout.HeadDim;
        Rejects(backend, p, "query", queryLength: elements - 1);
        Rejects(backend, p, "output", outputLength: elements - 1);
        Rejects(backend, p, "keyCache", keyLength: p.Keys.Length - 1);
        Rejects(backend, p, "valueCache", valueLength: p.Values.Length - 1);
        Rejects(backend, p, "layout", layoutOverride: p.Layout with { HeadDim = 31, DType = KvDType.F16 });
        Rejects(backend, p, "layout", layoutOverride: p.Layout with { BlockSize = 0 });
    }

    [Test]
    public void BufferOfAnotherBackendIsRejectedByName()
    {
        var p = Small(Mask.Causal);
        int elements = p.NumTokens * p.NumHeads * p.Layout.HeadDim;
        using var hostQuery = Backends.Cpu.Allocate<float>(elements, "host-query");
        var vk = Backends.Vulkan;
        using var keys = vk.Allocate<uint>(p.Keys.Length, "keys");
        using var values = vk.Allocate<uint>(p.Values.Length, "values");
        using var output = vk.Allocate<float>(elements, "output");
        var e = Assert.Catch<ArgumentException>(() => vk.Attention(p.Batch, hostQuery, keys, values, p.Layout, output));
        Assert.That(e!.ParamName, Is.EqualTo("query"));
        Assert.That(e.Message, Does.Contain("host-query"));
    }

    // Unused block-table entries and an empty batch are fine; the kernel runs nothing for zero tokens.
    [TestCase("cpu"), TestCase("vulkan")]
    public void EmptyBatchIsANoOp(string backend)
    {
        var p = Make(13, [4, 0], [0, 0], 32, 1, 1, 8, KvDType.F32, Mask.Causal);
        Assert.DoesNotThrow(() => Run(Backends.Get(backend), p));
    }

    // Timing, not a check: run by hand (dotnet test --filter Name~AttentionTiming) to compare backends.
    [Explicit("timing only")]
    [TestCase("cpu", 48, 1024, 1, KvDType.F16), TestCase("cpu", 48, 1024, 1, KvDType.F32), TestCase("vulkan", 48, 1024, 1, KvDType.F16)]
    [TestCase("cpu", 1, 8192, 1, KvDType.F16), TestCase("vulkan", 1, 8192, 1, KvDType.F16)]
    [TestCase("cpu", 4, 256, 64, KvDType.F16), TestCase("vulkan", 4, 256, 64, KvDType.F16)]
    public void AttentionTiming(string backendName, int samples, int context, int newTokens, KvDType dtype)
    {
        var backend = Backends.Get(backendName);
        var p = Make(1, Enumerable.Repeat(context, samples).ToArray(), Enumerable.Repeat(newTokens, samples).ToArray(), 128, 8, 4, 16, dtype, Mask.Causal);
        int elements = p.NumTokens * p.NumHeads * p.Layout.HeadDim;
        using var query = backend.Allocate<float>(elements, "query");
        using var keys = backend.Allocate<uint>(p.Keys.Length, "keys");
        using var values = backend.Allocate<uint>(p.Values.Length, "values");
        using var output = backend.Allocate<float>(elements, "output");
        query.Write(p.Query); keys.Write(p.Keys); values.Write(p.Values);
        backend.Attention(p.Batch, query, keys, values, p.Layout, output);
        backend.Flush();
        double best = double.MaxValue;   // the minimum: this machine is shared
        for (int r = 0; r < 5; r++)
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            backend.Attention(p.Batch, query, keys, values, p.Layout, output);
            backend.Flush();
            best = Math.Min(best, watch.Elapsed.TotalMilliseconds);
        }
        TestContext.Out.WriteLine($"{backendName}: {samples} samples x ctx {context} + {newTokens} new, 32 heads / 8 KV heads, d 128, {dtype}: {best:F2} ms (best of 5)");
    }
}
