using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// Vulkan copies between two buffers take the transfer path (vkCmdCopyBuffer) when every destination row is
/// distinct, and the shader otherwise (a later pair of a segment overwriting an earlier one's row must win): both
/// against the reference, word for word.
/// </summary>
public class KvMoveTransferPathTests
{
    [Test]
    public void DistinctAndRepeatedDestinationsBothMatchTheReference([Values("cpu", "vulkan")] string backendName, [Values(1, 2)] int seed, [Values(true, false)] bool repeated)
    {
        var backend = Backends.Get(backendName);
        var random = new Random(seed);
        const int rows = 64, rowWords = 40;
        var sourceWords = new uint[rows * rowWords];
        var destinationWords = new uint[rows * rowWords];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(sourceWords.AsSpan()));
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(destinationWords.AsSpan()));
        var sourceRows = Enumerable.Range(0, 30).Select(_ => random.Next(rows)).ToArray();
        var destinationRows = Enumerable.Range(0, rows).OrderBy(_ => random.Next()).Take(30).ToArray();
        if (repeated) destinationRows[20] = destinationRows[3]; // same segment: pair 20 overwrites pair 3
        int[] segments = [0, 25, 30];
        if (repeated) Assume.That(destinationRows[25..].Contains(destinationRows[3]), Is.False);
        var expected = (uint[])destinationWords.Clone();
        ReferenceKvMove.Copy(sourceWords, expected, sourceRows, destinationRows, segments, rowWords);
        using var src = backend.Allocate<uint>(sourceWords.Length, "source");
        using var dst = backend.Allocate<uint>(destinationWords.Length, "destination");
        src.Write(sourceWords);
        dst.Write(destinationWords);
        backend.CopyKv(src, dst, sourceRows, destinationRows, segments, rowWords);
        Assert.That(dst.ToArray(), Is.EqualTo(expected));
    }
}
