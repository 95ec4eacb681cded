using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Cli.SelfTest;

/// <summary>kv_move: append (fp16 cache) and in-place compaction, word for word against the reference.</summary>
internal static class KvMoveChecks
{
    public static IEnumerable<KernelCheck> All()
    {
        yield return new KernelCheck("kv_move", "append fp16 [300 tokens, 8x128] to shuffled blocks", Append);
        yield return new KernelCheck("kv_move", "compact accepted nodes in place, 24 samples", Compact);
    }

    private static string? Append(ComputeBackend backend, Random random, out string agreement)
    {
        var layout = new KvLayout(NumBlocks: 40, BlockSize: 16, NumKvHeads: 8, HeadDim: 128, KvDType.F16);
        const int tokens = 300;
        var blocks = Enumerable.Range(0, layout.NumBlocks).OrderBy(_ => random.Next()).ToArray();
        var slots = Enumerable.Range(0, tokens).Select(t => blocks[t / layout.BlockSize] * layout.BlockSize + t % layout.BlockSize).ToArray();
        var source = Enumerable.Range(0, tokens * layout.RowElements).Select(_ => (float)(random.NextDouble() * 8 - 4)).ToArray();
        var initial = RandomWords(random, layout.TotalWords);
        var expected = (uint[])initial.Clone();
        ReferenceKvMove.Append(source, expected, layout, slots);

        using var src = backend.Allocate<float>(source.Length, "source");
        using var cache = backend.Allocate<uint>(layout.TotalWords, "cache");
        src.Write(source);
        cache.Write(initial);
        backend.AppendKv(src, cache, layout, slots);
        return CompareWords(cache.ToArray(), expected, out agreement);
    }

    private static string? Compact(ComputeBackend backend, Random random, out string agreement)
    {
        const int samples = 24, slotsPerSample = 40, rowWords = 1024;
        var sourceRows = new List<int>();
        var destinationRows = new List<int>();
        var segments = new List<int> { 0 };
        for (int s = 0; s < samples; s++)
        {
            // A tree of new nodes after the committed context; accepted nodes move down to contiguous slots.
            int baseSlot = s * slotsPerSample, committed = random.Next(0, 10), nodes = random.Next(1, slotsPerSample - committed);
            var accepted = Enumerable.Range(0, nodes).Where(_ => random.NextDouble() < 0.5).ToArray();
            for (int j = 0; j < accepted.Length; j++)
                if (accepted[j] != j)
                {
                    sourceRows.Add(baseSlot + committed + accepted[j]);
                    destinationRows.Add(baseSlot + committed + j);
                }
            segments.Add(sourceRows.Count);
        }
        var initial = RandomWords(random, (long)samples * slotsPerSample * rowWords);
        var expected = (uint[])initial.Clone();
        ReferenceKvMove.Copy(expected, expected, sourceRows.ToArray(), destinationRows.ToArray(), segments.ToArray(), rowWords);

        using var cache = backend.Allocate<uint>(initial.Length, "cache");
        cache.Write(initial);
        backend.CopyKv(cache, cache, sourceRows.ToArray(), destinationRows.ToArray(), segments.ToArray(), rowWords);
        return CompareWords(cache.ToArray(), expected, out agreement);
    }

    internal static uint[] RandomWords(Random random, long count)
    {
        var words = new uint[count];
        random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(words.AsSpan()));
        return words;
    }

    internal static string? CompareWords(uint[] actual, uint[] expected, out string agreement)
    {
        agreement = $"{expected.Length} words bit-exact";
        for (long i = 0; i < expected.Length; i++)
            if (actual[i] != expected[i])
                return $"word {i}: got 0x{actual[i]:x8}, reference 0x{expected[i]:x8}";
        return null;
    }
}
