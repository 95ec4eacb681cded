using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// kv_move on buffers larger than one storage-buffer binding: the Vulkan backend binds them as up to 4 row-aligned
/// windows and splits large append sources. Most cases lower the binding size the backend plans with, so the
/// windows are exercised on small buffers; one case uses a real buffer beyond lavapipe's 128 MiB limit.
/// </summary>
public class KvMoveWindowTests
{
    [TestCase(7, 1000, false, 1)]
    [TestCase(7, 1000, true, 2)]
    [TestCase(64, 300, true, 3)]   // binding smaller than 5 rows: many windows needed for few rows
    [TestCase(1, 257, false, 4)]
    public void CopyAcrossWindowsMatchesReference(int rowWords, long bindingWords, bool sameBuffer, int seed)
    {
        var vk = Backends.Vulkan;
        var rng = new Random(seed);
        long windowRows = bindingWords / rowWords;
        int rows = (int)Math.Min(4 * windowRows, 500);
        // Segments own disjoint random rows spread over every window.
        var plan = KvMoveTests.RandomIndependentPlan(rng, segments: 6, maxPairs: 20, sameBuffer, rows);
        Assert.That(plan.DestinationRows.Max() / windowRows, Is.GreaterThanOrEqualTo(Math.Min(3, (rows - 1) / windowRows)), "the plan must reach the last window");
        WithBindingWords(vk, bindingWords, () => KvMoveTests.CheckCopy(vk, plan, rowWords, rng));
    }

    [TestCase(KvDType.F32)]
    [TestCase(KvDType.F16)]
    public void AppendAcrossWindowsAndSplitSourceMatchesReference(KvDType dtype)
    {
        var vk = Backends.Vulkan;
        var rng = new Random(9);
        var layout = new KvLayout(NumBlocks: 40, BlockSize: 4, NumKvHeads: 2, HeadDim: 6, dtype);
        var source = KvMoveTests.RandomFloats(rng, 150 * layout.RowElements);
        var slots = KvMoveTests.RandomDistinct(rng, 150, (int)layout.NumSlots);
        // A binding of 40 rows: the fp32 cache (160 rows) in 4 windows, the fp16 one in 2, the source in 4 dispatches.
        WithBindingWords(vk, 40L * layout.RowElements + 1, () =>
            KvMoveTests.CheckAppend(vk, source, KvMoveTests.RandomWords(rng, layout.TotalWords), layout, slots));
    }

    [Test]
    public void MoreThanFourWindowsIsAClearError()
    {
        var vk = Backends.Vulkan;
        using var buffer = vk.Allocate<uint>(1000, "big-cache");
        WithBindingWords(vk, 101, () =>
        {
            // 10 words per row, 10 rows per window: row 45 needs a fifth window.
            var e = Assert.Throws<ArgumentException>(() => vk.CopyKv(buffer, buffer, new[] { 45 }, new[] { 0 }, new[] { 0, 1 }, 10));
            Assert.That(e!.ParamName, Is.EqualTo("destination"));
            Assert.That(e.Message, Does.Contain("big-cache").And.Contain("at most 4"));
        });
    }

    [Test]
    public void CopyInABufferLargerThanOneBinding()
    {
        var vk = Backends.Vulkan;
        long range = vk.Info.Limits.MaxStorageBufferRange;
        if (range > 256L << 20) Assert.Ignore($"maxStorageBufferRange is {range} bytes: a buffer beyond it is too large for a unit test here");
        const int rowWords = 1024;
        long words = (range + range / 2) / 4;
        long rows = words / rowWords;
        using var cache = vk.Allocate<uint>(words, "cache-beyond-one-binding");
        var rng = new Random(3);
        // Compaction-like moves from the far end down, and a move up across the boundary, in two segments.
        int[] src = { (int)rows - 1, (int)rows - 3, 5 }, dst = { 2, (int)rows - 4, (int)rows - 2 };
        var rowsData = new Dictionary<int, uint[]>();
        foreach (int r in src.Concat(dst).Distinct())
        {
            rowsData[r] = KvMoveTests.RandomWords(rng, rowWords);
            cache.Write(rowsData[r], (long)r * rowWords);
        }
        vk.CopyKv(cache, cache, src, dst, new[] { 0, 2, 3 }, rowWords);
        var got = new uint[rowWords];
        for (int p = 0; p < src.Length; p++)
        {
            cache.Read(got, (long)dst[p] * rowWords);
            Assert.That(got, Is.EqualTo(rowsData[src[p]]), $"pair {p}: row {src[p]} → {dst[p]}");
        }
        cache.Read(got, (long)src[0] * rowWords);
        Assert.That(got, Is.EqualTo(rowsData[src[0]]), "a source row is not cleared");
    }

    private static void WithBindingWords(VulkanBackend vk, long words, Action body)
    {
        vk.KvMoveBindingWordsOverride = words;
        try { body(); }
        finally { vk.KvMoveBindingWordsOverride = null; }
    }
}
