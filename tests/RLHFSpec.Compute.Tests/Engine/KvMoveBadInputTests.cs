using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>Bad arguments to AppendKv and CopyKv raise an ArgumentException naming the argument, on every backend, and change nothing.</summary>
public class KvMoveBadInputTests
{
    private static readonly string[] BackendNames = { "cpu", "vulkan" };
    private static readonly KvLayout Layout = new(NumBlocks: 2, BlockSize: 2, NumKvHeads: 1, HeadDim: 4, KvDType.F16); // 4 slots of 2 words

    public delegate void AppendCall(ComputeBackend b, DeviceBuffer<float> source, DeviceBuffer<uint> cache);

    private static IEnumerable<TestCaseData> AppendCases()
    {
        foreach (var name in BackendNames)
        {
            TestCaseData Case(string param, string what, AppendCall call) => new TestCaseData(name, param, call).SetName($"AppendKv({name}): {what} → {param}");
            yield return Case("layout", "zero blocks", (b, s, c) => b.AppendKv(s, c, Layout with { NumBlocks = 0 }, new[] { 0 }));
            yield return Case("layout", "odd fp16 head dim", (b, s, c) => b.AppendKv(s, c, Layout with { HeadDim = 3 }, new[] { 0 }));
            yield return Case("layout", "unknown dtype", (b, s, c) => b.AppendKv(s, c, Layout with { DType = (KvDType)7 }, new[] { 0 }));
            yield return Case("cache", "cache smaller than the layout", (b, s, c) => b.AppendKv(s, c, Layout with { NumBlocks = 3 }, new[] { 0 }));
            yield return Case("source", "source shorter than slots × row", (b, s, c) => b.AppendKv(s, c, Layout, new[] { 0, 1, 2 }));
            yield return Case("slots", "slot beyond the cache", (b, s, c) => b.AppendKv(s, c, Layout, new[] { 4 }));
            yield return Case("slots", "negative slot", (b, s, c) => b.AppendKv(s, c, Layout, new[] { -1 }));
            yield return Case("slots", "repeated slot", (b, s, c) => b.AppendKv(s, c, Layout, new[] { 1, 1 }));
        }
    }

    [TestCaseSource(nameof(AppendCases))]
    public void AppendKvRejects(string backend, string param, AppendCall call)
    {
        var compute = Backends.Get(backend);
        using var source = compute.Allocate<float>(8, "source");   // two rows
        using var cache = compute.Allocate<uint>(Layout.TotalWords, "cache");
        var before = Enumerable.Range(1, (int)cache.Length).Select(i => (uint)i).ToArray();
        cache.Write(before);
        var e = Assert.Catch<ArgumentException>(() => call(compute, source, cache));
        Assert.That(e!.ParamName, Is.EqualTo(param), e.Message);
        Assert.That(cache.ToArray(), Is.EqualTo(before));
    }

    public delegate void CopyCall(ComputeBackend b, DeviceBuffer<uint> a, DeviceBuffer<uint> c);

    private static IEnumerable<TestCaseData> CopyCases()
    {
        foreach (var name in BackendNames)
        {
            // a and c: 10 words each, rows of 2 words (5 rows).
            TestCaseData Case(string param, string what, CopyCall call) => new TestCaseData(name, param, call).SetName($"CopyKv({name}): {what} → {param}");
            yield return Case("rowWords", "zero row size", (b, a, c) => b.CopyKv(a, c, new[] { 0 }, new[] { 0 }, new[] { 0, 1 }, 0));
            yield return Case("destinationRows", "fewer destinations than sources", (b, a, c) => b.CopyKv(a, c, new[] { 0, 1 }, new[] { 0 }, new[] { 0, 2 }, 2));
            yield return Case("segmentOffsets", "no offsets for pairs", (b, a, c) => b.CopyKv(a, c, new[] { 0 }, new[] { 0 }, ReadOnlySpan<int>.Empty, 2));
            yield return Case("segmentOffsets", "first offset not 0", (b, a, c) => b.CopyKv(a, c, new[] { 0 }, new[] { 0 }, new[] { 1, 1 }, 2));
            yield return Case("segmentOffsets", "decreasing offsets", (b, a, c) => b.CopyKv(a, c, new[] { 0, 1 }, new[] { 0, 1 }, new[] { 0, 2, 1, 2 }, 2));
            yield return Case("segmentOffsets", "offsets not covering all pairs", (b, a, c) => b.CopyKv(a, c, new[] { 0, 1 }, new[] { 0, 1 }, new[] { 0, 1 }, 2));
            yield return Case("sourceRows", "source row beyond the buffer", (b, a, c) => b.CopyKv(a, c, new[] { 5 }, new[] { 0 }, new[] { 0, 1 }, 2));
            yield return Case("destinationRows", "destination row beyond the buffer", (b, a, c) => b.CopyKv(a, c, new[] { 0 }, new[] { 5 }, new[] { 0, 1 }, 2));
            yield return Case("destinationRows", "negative destination row", (b, a, c) => b.CopyKv(a, c, new[] { 0 }, new[] { -1 }, new[] { 0, 1 }, 2));
            yield return Case("destinationRows", "two segments write one row", (b, a, c) => b.CopyKv(a, c, new[] { 0, 1 }, new[] { 3, 3 }, new[] { 0, 1, 2 }, 2));
            yield return Case("sourceRows", "a segment reads a row another writes (same buffer)", (b, a, c) => b.CopyKv(c, c, new[] { 0, 2 }, new[] { 2, 1 }, new[] { 0, 1, 2 }, 2));
            yield return Case("source", "null source", (b, a, c) => b.CopyKv(null!, c, new[] { 0 }, new[] { 0 }, new[] { 0, 1 }, 2));
        }
    }

    [TestCaseSource(nameof(CopyCases))]
    public void CopyKvRejects(string backend, string param, CopyCall call)
    {
        var compute = Backends.Get(backend);
        using var a = compute.Allocate<uint>(10, "a");
        using var c = compute.Allocate<uint>(10, "c");
        var before = Enumerable.Range(1, 10).Select(i => (uint)i).ToArray();
        c.Write(before);
        var e = Assert.Catch<ArgumentException>(() => call(compute, a, c));
        Assert.That(e!.ParamName, Is.EqualTo(param), e.Message);
        Assert.That(c.ToArray(), Is.EqualTo(before));
    }

    [Test]
    public void ReadingAcrossSegmentsOfDifferentBuffersIsAllowed([ValueSource(nameof(BackendNames))] string backend)
    {
        // Row 1 of the source is read by segment 0 while segment 1 writes row 1 of the destination: no race.
        var compute = Backends.Get(backend);
        using var a = compute.Allocate<uint>(4, "a");
        using var c = compute.Allocate<uint>(4, "c");
        a.Write(new uint[] { 10, 11, 12, 13 });
        compute.CopyKv(a, c, new[] { 1, 0 }, new[] { 0, 1 }, new[] { 0, 1, 2 }, 2);
        Assert.That(c.ToArray(), Is.EqualTo(new uint[] { 12, 13, 10, 11 }));
    }

    [Test]
    public void BufferOfAnotherBackendIsRejectedByName()
    {
        var vk = Backends.Vulkan;
        using var host = Backends.Cpu.Allocate<uint>(8, "host-cache");
        using var device = vk.Allocate<uint>(8, "device-cache");
        using var hostSource = Backends.Cpu.Allocate<float>(4, "host-source");
        var e = Assert.Throws<ArgumentException>(() => vk.CopyKv(host, device, new[] { 0 }, new[] { 1 }, new[] { 0, 1 }, 2));
        Assert.That(e!.ParamName, Is.EqualTo("source"));
        e = Assert.Throws<ArgumentException>(() => Backends.Cpu.CopyKv(host, device, new[] { 0 }, new[] { 1 }, new[] { 0, 1 }, 2));
        Assert.That(e!.ParamName, Is.EqualTo("destination"));
        e = Assert.Throws<ArgumentException>(() => vk.AppendKv(hostSource, device, Layout, new[] { 0 }));
        Assert.That(e!.ParamName, Is.EqualTo("source"));
        Assert.That(e.Message, Does.Contain("host-source"));
    }
}
