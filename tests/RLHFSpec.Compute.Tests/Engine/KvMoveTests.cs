using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// kv_move on both backends against <see cref="ReferenceKvMove"/>. Results are compared word for word (tolerance 0:
/// the kernel only moves bits, and fp16 packing must round exactly as System.Half does). Caches start filled with
/// random words so a stray or missing write shows.
/// </summary>
public class KvMoveTests
{
    private static readonly string[] BackendNames = { "cpu", "vulkan" };

    [Test, Combinatorial]
    public void AppendMatchesReference([ValueSource(nameof(BackendNames))] string backend,
        [Values(KvDType.F32, KvDType.F16)] KvDType dtype,
        [Values(1, 7, 300)] int tokens,
        [Values(1, 2)] int seed)
    {
        var rng = new Random(seed * 7919 + tokens);
        int heads = rng.Next(1, 4), headDim = 2 * rng.Next(1, 40);
        var layout = new KvLayout(NumBlocks: tokens / 4 + 3, BlockSize: 8, heads, headDim, dtype);
        var source = RandomFloats(rng, tokens * layout.RowElements + 5);
        var slots = RandomDistinct(rng, tokens, (int)layout.NumSlots);
        var cache = RandomWords(rng, layout.TotalWords + 3);
        CheckAppend(Backends.Get(backend), source, cache, layout, slots);
    }

    [Test]
    public void AppendOfLargeRowsMatchesReference([ValueSource(nameof(BackendNames))] string backend, [Values(KvDType.F32, KvDType.F16)] KvDType dtype)
    {
        // 8 KV heads × 128: a realistic row; 96 tokens take the CPU backend's parallel path.
        var rng = new Random(11);
        var layout = new KvLayout(NumBlocks: 12, BlockSize: 16, NumKvHeads: 8, HeadDim: 128, dtype);
        var source = RandomFloats(rng, 96 * layout.RowElements);
        CheckAppend(Backends.Get(backend), source, RandomWords(rng, layout.TotalWords), layout, RandomDistinct(rng, 96, (int)layout.NumSlots));
    }

    [Test]
    public void AppendOfManyShortRowsMatchesReference([ValueSource(nameof(BackendNames))] string backend, [Values(KvDType.F32, KvDType.F16)] KvDType dtype)
    {
        // 9,001 rows: the Vulkan backend packs runs of rows into one workgroup (the last run shorter).
        var rng = new Random(17);
        var layout = new KvLayout(NumBlocks: 1200, BlockSize: 8, NumKvHeads: 1, HeadDim: 6, dtype);
        var source = RandomFloats(rng, 9001 * layout.RowElements);
        CheckAppend(Backends.Get(backend), source, RandomWords(rng, layout.TotalWords), layout, RandomDistinct(rng, 9001, (int)layout.NumSlots));
    }

    [Test]
    public void Fp16PackingRoundsExactlyLikeSystemHalf([ValueSource(nameof(BackendNames))] string backend)
    {
        // Ties at every scale (normal and subnormal), the overflow boundary, subnormals, zeros, infinities.
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, 65504f, -65504f, 65519.996f, 65520f, -65520f, 1e10f, float.MaxValue,
            float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -float.Epsilon, 1e-30f,
            MathF.Pow(2, -24), MathF.Pow(2, -25), -MathF.Pow(2, -25), MathF.Pow(2, -25) * 1.0000001f, MathF.Pow(2, -26),
            MathF.Pow(2, -14), MathF.Pow(2, -14) * (1 - 1f / 2048), 6.1e-5f, 3 * MathF.Pow(2, -25), 5 * MathF.Pow(2, -25),
        };
        for (int e = -24; e <= 15; e++)
            for (int k = 0; k < 4; k++)
            {
                // 1 + k/1024 + 1/2048: halfway between two halves (ties to even for even and odd k), and ±1 ulp of float.
                float tie = MathF.ScaleB(1 + k / 1024f + 1 / 2048f, e);
                values.Add(tie);
                values.Add(-tie);
                values.Add(BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(tie) + 1));
                values.Add(BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(tie) - 1));
            }
        var rng = new Random(5);
        while (values.Count % 64 != 0) values.Add((float)(rng.NextDouble() * 1e-6));
        var layout = new KvLayout(NumBlocks: 4, BlockSize: 4, NumKvHeads: 2, HeadDim: 32, KvDType.F16);
        int rows = values.Count / layout.RowElements;
        Assert.That(rows, Is.LessThanOrEqualTo(layout.NumSlots));
        CheckAppend(Backends.Get(backend), values.ToArray(), RandomWords(rng, layout.TotalWords), layout, Enumerable.Range(0, rows).Reverse().ToArray());
    }

    [Test]
    public void Fp16NaNStaysNaN([ValueSource(nameof(BackendNames))] string backend)
    {
        var compute = Backends.Get(backend);
        var layout = new KvLayout(1, 1, 1, 4, KvDType.F16);
        using var source = compute.Allocate<float>(4, "source");
        using var cache = compute.Allocate<uint>(layout.TotalWords, "cache");
        source.Write(new[] { float.NaN, -float.NaN, BitConverter.UInt32BitsToSingle(0x7F800001), 1f });
        compute.AppendKv(source, cache, layout, new[] { 0 });
        var words = cache.ToArray();
        var halves = new[] { (ushort)words[0], (ushort)(words[0] >> 16), (ushort)words[1], (ushort)(words[1] >> 16) };
        Assert.That(halves[..3].Select(h => Half.IsNaN(BitConverter.UInt16BitsToHalf(h))), Is.All.True);
        Assert.That(halves[3], Is.EqualTo(BitConverter.HalfToUInt16Bits((Half)1f)));
    }

    [Test, Combinatorial]
    public void CopyMatchesReference([ValueSource(nameof(BackendNames))] string backend,
        [Values(1, 7, 64, 1024)] int rowWords,
        [Values(1, 5, 40)] int segments,
        [Values(false, true)] bool sameBuffer,
        [Values(1, 2)] int seed)
    {
        var rng = new Random(seed * 1000 + rowWords * 31 + segments);
        int maxPairs = rowWords >= 1024 ? 4 : 12;
        var plan = RandomIndependentPlan(rng, segments, maxPairs, sameBuffer);
        CheckCopy(Backends.Get(backend), plan, rowWords, rng);
    }

    [Test]
    public void CopyOfWholeBlocksTakesParallelPaths([ValueSource(nameof(BackendNames))] string backend, [Values(1, 3)] int segments)
    {
        // Rows of 40,000 words (a block) split into several work items per row on the CPU and several chunks on Vulkan.
        var rng = new Random(segments);
        var plan = RandomIndependentPlan(rng, segments, 3, sameBuffer: true);
        CheckCopy(Backends.Get(backend), plan, 40_000, rng);
    }

    [Test, Combinatorial]
    public void InPlaceCompactionOfAcceptedNodes([ValueSource(nameof(BackendNames))] string backend,
        [Values(1, 7, 512)] int rowWords,
        [Values(3, 8)] int seed)
    {
        // Each segment (sample) owns a run of rows: committed context, then a tree of new nodes; the accepted nodes
        // (ascending) move down to the rows right after the context. Destinations ≤ sources, a later pair may
        // overwrite what an earlier one read.
        var rng = new Random(seed);
        int samples = rng.Next(1, 12);
        var src = new List<int>(); var dst = new List<int>(); var offsets = new List<int> { 0 };
        int rows = 0;
        for (int s = 0; s < samples; s++)
        {
            int context = rng.Next(0, 5), nodes = rng.Next(1, 12);
            var accepted = Enumerable.Range(0, nodes).Where(_ => rng.Next(2) == 0).ToList();
            for (int i = 0; i < accepted.Count; i++)
            {
                src.Add(rows + context + accepted[i]);
                dst.Add(rows + context + i);
            }
            rows += context + nodes + rng.Next(0, 3);
            offsets.Add(src.Count);
        }
        var plan = new CopyPlan(src.ToArray(), dst.ToArray(), offsets.ToArray(), rows + 1, rows + 1, SameBuffer: true);
        var (before, after) = CheckCopy(Backends.Get(backend), plan, rowWords, rng);
        // Independent of the reference: every accepted node's original row now sits at its compacted row.
        for (int p = 0; p < src.Count; p++)
            Assert.That(after.AsSpan(dst[p] * rowWords, rowWords).SequenceEqual(before.AsSpan(src[p] * rowWords, rowWords)), $"pair {p}");
    }

    [Test]
    public void PairsOfASegmentRunInOrder([ValueSource(nameof(BackendNames))] string backend)
    {
        // Row 0 → 1, then 1 → 2, then 2 → 3 in one segment: row 0 propagates to 3. In another segment 4 → 5 → 4 swaps nothing back.
        var plan = new CopyPlan(new[] { 0, 1, 2, 4, 5 }, new[] { 1, 2, 3, 5, 4 }, new[] { 0, 3, 5 }, 6, 6, SameBuffer: true);
        var (before, after) = CheckCopy(Backends.Get(backend), plan, 33, new Random(1));
        for (int r = 1; r <= 3; r++) Assert.That(after.AsSpan(r * 33, 33).SequenceEqual(before.AsSpan(0, 33)), $"row {r}");
        Assert.That(after.AsSpan(5 * 33, 33).SequenceEqual(before.AsSpan(4 * 33, 33)));
        Assert.That(after.AsSpan(4 * 33, 33).SequenceEqual(before.AsSpan(4 * 33, 33)));
    }

    [Test]
    public void EmptyCallsDoNothing([ValueSource(nameof(BackendNames))] string backend)
    {
        var compute = Backends.Get(backend);
        using var buffer = compute.Allocate<uint>(8, "buffer");
        using var source = compute.Allocate<float>(0, "source");
        buffer.Write(new uint[] { 1, 2, 3, 4, 5, 6, 7, 8 });
        compute.CopyKv(buffer, buffer, ReadOnlySpan<int>.Empty, ReadOnlySpan<int>.Empty, ReadOnlySpan<int>.Empty, 2);
        compute.CopyKv(buffer, buffer, ReadOnlySpan<int>.Empty, ReadOnlySpan<int>.Empty, new[] { 0, 0 }, 2);
        compute.AppendKv(source, buffer, new KvLayout(2, 2, 1, 2, KvDType.F32), ReadOnlySpan<int>.Empty);
        Assert.That(buffer.ToArray(), Is.EqualTo(new uint[] { 1, 2, 3, 4, 5, 6, 7, 8 }));
    }

    // ---- helpers ----

    internal sealed record CopyPlan(int[] SourceRows, int[] DestinationRows, int[] SegmentOffsets, int SourceRowCount, int DestinationRowCount, bool SameBuffer);

    /// <summary>
    /// Segments with disjoint row pools (so they are independent); within a segment rows repeat freely, giving
    /// chains (a → b, b → c) and repeated destinations whose result depends on the pair order.
    /// </summary>
    internal static CopyPlan RandomIndependentPlan(Random rng, int segments, int maxPairs, bool sameBuffer, int? rows = null)
    {
        int poolSize = rows is int r ? Math.Max(1, r / segments) : 2 * maxPairs;
        var pool = Enumerable.Range(0, rows ?? segments * poolSize + 3).OrderBy(_ => rng.Next()).ToArray();
        int sourceRowCount = sameBuffer ? pool.Length : rows ?? rng.Next(1, 50);
        var src = new List<int>(); var dst = new List<int>(); var offsets = new List<int> { 0 };
        for (int g = 0; g < segments; g++)
        {
            var mine = pool.AsSpan(g * poolSize, poolSize).ToArray();
            int pairs = rng.Next(0, maxPairs + 1);
            for (int p = 0; p < pairs; p++)
            {
                dst.Add(mine[rng.Next(poolSize)]);
                src.Add(sameBuffer ? mine[rng.Next(poolSize)] : rng.Next(sourceRowCount));
            }
            offsets.Add(src.Count);
        }
        return new CopyPlan(src.ToArray(), dst.ToArray(), offsets.ToArray(), sourceRowCount, pool.Length, sameBuffer);
    }

    /// <summary>Runs the plan on the backend and on the reference; returns the destination before and after.</summary>
    internal static (uint[] Before, uint[] After) CheckCopy(ComputeBackend compute, CopyPlan plan, int rowWords, Random rng)
    {
        // A few words of slack past the last row: they must stay untouched.
        var destinationWords = RandomWords(rng, (long)plan.DestinationRowCount * rowWords + 5);
        var sourceWords = plan.SameBuffer ? destinationWords : RandomWords(rng, (long)plan.SourceRowCount * rowWords + 2);
        using var destination = compute.Allocate<uint>(destinationWords.Length, "destination");
        using var source = plan.SameBuffer ? null : compute.Allocate<uint>(sourceWords.Length, "source");
        destination.Write(destinationWords);
        source?.Write(sourceWords);
        compute.CopyKv(source ?? destination, destination, plan.SourceRows, plan.DestinationRows, plan.SegmentOffsets, rowWords);
        var expected = (uint[])destinationWords.Clone();
        ReferenceKvMove.Copy(plan.SameBuffer ? expected : sourceWords, expected, plan.SourceRows, plan.DestinationRows, plan.SegmentOffsets, rowWords);
        var actual = destination.ToArray();
        AssertWordsEqual(actual, expected);
        if (source != null) Assert.That(source.ToArray(), Is.EqualTo(sourceWords), "source must not change");
        return (destinationWords, actual);
    }

    internal static void CheckAppend(ComputeBackend compute, float[] sourceValues, uint[] cacheWords, KvLayout layout, int[] slots)
    {
        using var source = compute.Allocate<float>(sourceValues.Length, "source");
        using var cache = compute.Allocate<uint>(cacheWords.Length, "cache");
        source.Write(sourceValues);
        cache.Write(cacheWords);
        compute.AppendKv(source, cache, layout, slots);
        var expected = (uint[])cacheWords.Clone();
        ReferenceKvMove.Append(sourceValues, expected, layout, slots);
        AssertWordsEqual(cache.ToArray(), expected);
    }

    internal static void AssertWordsEqual(uint[] actual, uint[] expected)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        int first = actual.AsSpan().CommonPrefixLength(expected);
        if (first < actual.Length)
            Assert.Fail($"word {first} of {actual.Length}: got 0x{actual[first]:x8}, expected 0x{expected[first]:x8} " +
                $"({Enumerable.Range(0, actual.Length).Count(i => actual[i] != expected[i])} words differ)");
    }

    internal static float[] RandomFloats(Random rng, int count)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            // Mostly activations of ordinary size, some tiny (fp16 subnormal) and some huge (fp16 overflow).
            double scale = rng.Next(20) switch { 0 => 1e-6, 1 => 1e5, _ => 4 };
            values[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        }
        return values;
    }

    internal static uint[] RandomWords(Random rng, long count)
    {
        var words = new uint[count];
        for (long i = 0; i < count; i++) words[i] = (uint)rng.NextInt64(0, 1L << 32);
        return words;
    }

    internal static int[] RandomDistinct(Random rng, int count, int range) =>
        Enumerable.Range(0, range).OrderBy(_ => rng.Next()).Take(count).ToArray();
}
