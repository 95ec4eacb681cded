using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The paged KV cache on both backends against a host model that keeps, per sample, layer and K/V, the expected
/// words of every committed position (packed with <see cref="ReferenceKvMove"/>). Every check reads the device
/// buffers back and compares word for word.
/// </summary>
public class KvCacheTests
{
    private static readonly string[] BackendNames = { "cpu", "vulkan" };

    private static KvCacheConfig SmallConfig(KvDType dtype, int blocks) =>
        new(NumLayers: 2, BlockSize: 4, NumKvHeads: 2, HeadDim: 6, dtype, MemoryBudgetBytes: blocks * BytesPerBlock(dtype));

    private static long BytesPerBlock(KvDType dtype) => new KvCacheConfig(2, 4, 2, 6, dtype, 1).BytesPerBlock;

    [Test, Combinatorial]
    public void StepsOfReserveAppendCommitKeepExactlyTheAcceptedRows([ValueSource(nameof(BackendNames))] string backend,
        [Values(KvDType.F32, KvDType.F16)] KvDType dtype, [Values(1, 2)] int seed)
    {
        var rng = new Random(seed);
        using var cache = new KvCache(Backends.Get(backend), SmallConfig(dtype, 200));
        var model = new HostModel(cache);
        int[] samples = { 3, 17, 5, 8 };
        foreach (int s in samples) cache.AddSample(s);
        // Prefill: every token accepted (no copies); then tree steps with random accepted paths.
        model.Step(rng, samples, samples.Select(_ => rng.Next(1, 14)).ToArray(), acceptAll: true);
        model.Check();
        for (int step = 0; step < 6; step++)
        {
            model.Step(rng, samples, samples.Select(_ => rng.Next(0, 9)).ToArray(), acceptAll: false);
            model.Check();
        }
        foreach (int s in samples)
            Assert.That(cache.BlockTable(s).Count, Is.EqualTo((cache.ContextLength(s) + 3) / 4), "blocks beyond the context are freed");
        int used = samples.Sum(s => cache.BlockTable(s).Count);
        Assert.That(cache.FreeBlocks, Is.EqualTo(cache.NumBlocks - used));
        Assert.That(samples.SelectMany(s => cache.BlockTable(s)).Distinct().Count(), Is.EqualTo(used), "samples never share blocks");

        cache.Release(17);
        Assert.That(cache.FreeBlocks, Is.EqualTo(cache.NumBlocks - used + model.BlocksOf(17)));
        model.Forget(17);
        model.Check();
    }

    [Test]
    public void CommitFreesBlocksOfDroppedNodesAndRollbackDropsAll([ValueSource(nameof(BackendNames))] string backend)
    {
        using var cache = new KvCache(Backends.Get(backend), SmallConfig(KvDType.F16, 20));
        var model = new HostModel(cache);
        cache.AddSample(1);
        model.Step(new Random(1), new[] { 1 }, new[] { 5 }, acceptAll: true);      // 5 tokens: 2 blocks
        Assert.That(cache.TryReserve(1, 20), Is.True);                            // 25 tokens: 7 blocks
        Assert.That(cache.BlockTable(1).Count, Is.EqualTo(7));
        cache.Commit(1, new[] { 0, 19 });                                         // 7 tokens: 2 blocks
        Assert.That(cache.ContextLength(1), Is.EqualTo(7));
        Assert.That(cache.RejectedLength(1), Is.EqualTo(18), "commit only keeps");
        Assert.That(cache.BlockTable(1).Count, Is.EqualTo(7), "the rejected tokens hold their blocks until the rollback");
        Assert.Throws<InvalidOperationException>(() => cache.TryReserve(1, 1), "no reservation before the rollback");
        cache.Rollback(1);
        Assert.That(cache.RejectedLength(1), Is.EqualTo(0));
        Assert.That(cache.BlockTable(1).Count, Is.EqualTo(2));
        Assert.That(cache.FreeBlocks, Is.EqualTo(cache.NumBlocks - 2));
        Assert.That(cache.TryReserve(1, 6), Is.True);
        cache.Rollback(1);
        Assert.That(cache.ContextLength(1), Is.EqualTo(7));
        Assert.That(cache.PendingLength(1), Is.EqualTo(0));
        Assert.That(cache.FreeBlocks, Is.EqualTo(cache.NumBlocks - 2));
    }

    /// <summary>
    /// Commit only keeps, rollback discards: over random shapes and steps, a commit moves the accepted rows and
    /// leaves the rejected ones holding their blocks; the rollback (batched over every sample, committed or not)
    /// frees exactly the blocks the context no longer needs, and an abandoned step (reserved and written, never
    /// committed) leaves its sample exactly as before. Every committed word is checked against the host reference.
    /// </summary>
    [Test, Combinatorial]
    public void RollbackDiscardsExactlyTheUncommittedTokens([ValueSource(nameof(BackendNames))] string backend, [Values(1, 2, 3, 4, 5)] int seed)
    {
        var rng = new Random(seed * 7919);
        var dtype = rng.Next(2) == 0 ? KvDType.F32 : KvDType.F16;
        var config = new KvCacheConfig(NumLayers: rng.Next(1, 4), BlockSize: new[] { 1, 2, 4, 8 }[rng.Next(4)], NumKvHeads: rng.Next(1, 4),
            HeadDim: 2 * rng.Next(1, 5), dtype, MemoryBudgetBytes: 1);
        using var cache = new KvCache(Backends.Get(backend), config with { MemoryBudgetBytes = 400 * config.BytesPerBlock });
        var model = new HostModel(cache);
        var samples = Enumerable.Range(0, rng.Next(2, 6)).Select(i => 3 * i + rng.Next(3)).ToArray();
        foreach (int s in samples) cache.AddSample(s);
        for (int step = 0; step < 8; step++)
        {
            var tables = samples.ToDictionary(s => s, s => cache.BlockTable(s).ToArray());
            foreach (int s in samples) Assert.That(cache.TryReserve(s, rng.Next(0, 10)), Is.True);
            model.AppendPending(rng, samples);
            int reserved = cache.FreeBlocks;
            // Some samples commit a random ascending subset (possibly empty, possibly all); the others abandon the step.
            var committing = samples.Where(_ => rng.Next(4) != 0).ToArray();
            var offsets = new List<int> { 0 };
            var nodes = new List<int>();
            foreach (int s in committing)
            {
                nodes.AddRange(Enumerable.Range(0, cache.PendingLength(s)).Where(_ => rng.Next(3) != 0));
                offsets.Add(nodes.Count);
            }
            var pending = samples.ToDictionary(s => s, cache.PendingLength);
            cache.Commit(committing, offsets.ToArray(), nodes.ToArray());
            Assert.That(cache.FreeBlocks, Is.EqualTo(reserved), "a commit frees nothing");
            for (int i = 0; i < committing.Length; i++)
            {
                int s = committing[i], kept = offsets[i + 1] - offsets[i];
                Assert.That(cache.PendingLength(s), Is.EqualTo(0));
                Assert.That(cache.RejectedLength(s), Is.EqualTo(pending[s] - kept), $"sample {s}: the rejected tokens wait for the rollback");
                if (pending[s] > kept) Assert.Throws<InvalidOperationException>(() => cache.TryReserve(s, 1));
                model.Keep(s, nodes.GetRange(offsets[i], kept));
            }
            foreach (int s in samples.Except(committing)) model.Keep(s, []);
            cache.Rollback(samples);
            foreach (int s in samples)
            {
                Assert.That(cache.PendingLength(s) + cache.RejectedLength(s), Is.EqualTo(0));
                Assert.That(cache.BlockTable(s).Count, Is.EqualTo((cache.ContextLength(s) + cache.BlockSize - 1) / cache.BlockSize), $"sample {s}: blocks beyond the context are freed");
                Assert.That(cache.BlockTable(s).Take(tables[s].Length), Is.EqualTo(tables[s].Take(cache.BlockTable(s).Count)), $"sample {s}: kept blocks stay in place");
                if (!committing.Contains(s)) Assert.That(cache.BlockTable(s), Is.EqualTo(tables[s]), $"sample {s}: an abandoned step leaves the sample as it was");
            }
            Assert.That(cache.FreeBlocks, Is.EqualTo(cache.NumBlocks - samples.Sum(s => cache.BlockTable(s).Count)));
            model.Check();
        }
    }

    [Test]
    public void OutOfBlocksIsASignalAndNeverOverwritesAnotherSample([ValueSource(nameof(BackendNames))] string backend)
    {
        var rng = new Random(4);
        using var cache = new KvCache(Backends.Get(backend), SmallConfig(KvDType.F32, 6));
        Assert.That(cache.NumBlocks, Is.EqualTo(6));
        var model = new HostModel(cache);
        cache.AddSample(1);
        cache.AddSample(2);
        model.Step(rng, new[] { 1 }, new[] { 15 }, acceptAll: true);              // 4 blocks
        int free = cache.FreeBlocks;
        Assert.That(cache.BlocksNeeded(2, 9), Is.EqualTo(3));
        Assert.That(cache.TryReserve(2, 9), Is.False, "3 blocks needed, 2 free");
        Assert.That(cache.FreeBlocks, Is.EqualTo(free));
        Assert.That(cache.PendingLength(2), Is.EqualTo(0));
        Assert.That(cache.BlockTable(2), Is.Empty);
        Assert.That(cache.TryReserve(1, 100), Is.False, "more tokens than the whole cache");
        Assert.That(cache.PendingLength(1), Is.EqualTo(0));
        // Sample 2 takes what is left; sample 1's rows stay intact through its writes.
        model.Step(rng, new[] { 2 }, new[] { 8 }, acceptAll: true);
        Assert.That(cache.FreeBlocks, Is.EqualTo(0));
        Assert.That(cache.TryReserve(1, 1), Is.True, "sample 1's last block has a free slot");
        cache.Rollback(1);
        Assert.That(cache.TryReserve(2, 1), Is.False, "sample 2's blocks are full and none are free");
        model.Check();
        cache.Release(1);
        model.Forget(1);
        Assert.That(cache.TryReserve(2, 9), Is.True);
        cache.Rollback(2);
        model.Check();
    }

    [TestCase("cpu", "cpu")]
    [TestCase("vulkan", "vulkan")]
    [TestCase("cpu", "vulkan")]
    [TestCase("vulkan", "cpu")]
    public void CopyingASampleToAnotherCacheKeepsItsWords(string from, string to)
    {
        var rng = new Random(from.Length * 10 + to.Length);
        using var source = new KvCache(Backends.Get(from), SmallConfig(KvDType.F16, 40));
        using var target = new KvCache(Backends.Get(to), SmallConfig(KvDType.F16, 8));
        var model = new HostModel(source);
        source.AddSample(7);
        source.AddSample(9);
        model.Step(rng, new[] { 7, 9 }, new[] { 10, 13 }, acceptAll: true);
        model.Step(rng, new[] { 7, 9 }, new[] { 6, 6 }, acceptAll: false);
        target.AddSample(1);
        Assert.That(target.TryReserve(1, 5), Is.True);    // occupies 2 target blocks, which the copy must not touch
        var other = new HostModel(target);
        other.AppendPending(rng, new[] { 1 });
        target.Commit(1, new[] { 0, 1, 2, 3, 4 });
        Assert.That(target.RejectedLength(1), Is.EqualTo(0), "everything kept: nothing to roll back");
        other.CommitAll(1);

        Assert.That(source.TryCopySampleTo(7, target, 70), Is.True);
        Assert.That(target.ContextLength(70), Is.EqualTo(source.ContextLength(7)));
        var copied = model.Committed(7);
        HostModel.CheckAgainst(target, copied, 70);
        other.Check();
        // The target now lacks room for sample 9 (at least 4 blocks for 13+ tokens, at most 3 free): false, nothing changes.
        int free = target.FreeBlocks;
        Assert.That(source.BlockTable(9).Count, Is.GreaterThan(free));
        Assert.That(source.TryCopySampleTo(9, target, 90), Is.False);
        Assert.That(target.FreeBlocks, Is.EqualTo(free));
        Assert.That(target.Contains(90), Is.False);
        // Migration: the source lets go; the copy stays.
        source.Release(7);
        model.Forget(7);
        model.Check();
        HostModel.CheckAgainst(target, copied, 70);
    }

    [Test]
    public void CopyingASampleBetweenTwoVulkanDevicesStagesThroughTheHost()
    {
        var first = Backends.Vulkan;
        using var second = Devices.OpenVulkan(0);   // a second device object: buffers of another backend
        var rng = new Random(21);
        using var source = new KvCache(first, SmallConfig(KvDType.F32, 20));
        using var target = new KvCache(second, SmallConfig(KvDType.F32, 20));
        var model = new HostModel(source);
        source.AddSample(3);
        model.Step(rng, new[] { 3 }, new[] { 9 }, acceptAll: true);
        model.Step(rng, new[] { 3 }, new[] { 5 }, acceptAll: false);
        Assert.That(source.TryCopySampleTo(3, target, 3), Is.True);
        HostModel.CheckAgainst(target, model.Committed(3), 3);
    }

    [Test]
    public void CopyingWithinOneCacheForksASample([ValueSource(nameof(BackendNames))] string backend)
    {
        var rng = new Random(12);
        using var cache = new KvCache(Backends.Get(backend), SmallConfig(KvDType.F32, 30));
        var model = new HostModel(cache);
        cache.AddSample(1);
        model.Step(rng, new[] { 1 }, new[] { 11 }, acceptAll: true);
        Assert.That(cache.TryCopySampleTo(1, cache, 2), Is.True);
        Assert.That(cache.BlockTable(2).Intersect(cache.BlockTable(1)), Is.Empty);
        HostModel.CheckAgainst(cache, model.Committed(1), 2);
    }

    [Test]
    public void BlockTablesForAttention()
    {
        using var cache = new KvCache(Backends.Cpu, SmallConfig(KvDType.F16, 20));
        cache.AddSample(4);
        cache.AddSample(6);
        Assert.That(cache.TryReserve(4, 9), Is.True);   // 3 blocks
        cache.Commit(4, Enumerable.Range(0, 9).ToArray());
        Assert.That(cache.TryReserve(6, 2), Is.True);   // 1 block, pending
        Assert.That(cache.TryReserve(4, 4), Is.True);   // 13 tokens: 4 blocks
        ReadOnlySpan<int> samples = new[] { 6, 4 };
        int stride = cache.MaxBlocksPerSample(samples);
        Assert.That(stride, Is.EqualTo(4));
        var table = Enumerable.Repeat(-1, 2 * stride).ToArray();
        var lens = new int[2];
        cache.FillBlockTables(samples, stride, table, lens);
        Assert.That(lens, Is.EqualTo(new[] { 0, 9 }));
        Assert.That(table[..stride], Is.EqualTo(cache.BlockTable(6).Concat(new[] { 0, 0, 0 })));
        Assert.That(table[stride..], Is.EqualTo(cache.BlockTable(4)));
        var slots = new int[6];
        Assert.That(cache.PendingSlots(samples, slots), Is.EqualTo(6));
        Assert.That(slots[2..], Is.EqualTo(Enumerable.Range(9, 4).Select(p => cache.Slot(4, p))));
        Assert.That(slots[0], Is.EqualTo(cache.BlockTable(6)[0] * 4));
    }

    [Test]
    public void NumberOfBlocksFollowsTheBudgetAndTheBindingLimit()
    {
        var config = new KvCacheConfig(NumLayers: 4, BlockSize: 16, NumKvHeads: 8, HeadDim: 128, KvDType.F16, MemoryBudgetBytes: 1L << 30);
        // One block of one layer: 16 × 8 × 128 × 2 bytes = 32 KiB; of all layers, K and V: 256 KiB.
        Assert.That(config.BytesPerBlock, Is.EqualTo(256 << 10));
        var roomy = Backends.Cpu.Info.Limits;
        Assert.That(KvCache.NumBlocksFor(config, roomy), Is.EqualTo(4096));
        var lavapipe = roomy with { MaxStorageBufferRange = 128 << 20 };
        Assert.That(KvCache.NumBlocksFor(config, lavapipe), Is.EqualTo(4096));
        Assert.That(KvCache.NumBlocksFor(config with { MemoryBudgetBytes = 8L << 30 }, lavapipe), Is.EqualTo(4096), "one layer's buffer ≤ 128 MiB");
        var e = Assert.Throws<ArgumentException>(() => KvCache.NumBlocksFor(config with { MemoryBudgetBytes = 1000 }, roomy));
        Assert.That(e!.ParamName, Is.EqualTo("config"));
    }

    [Test]
    public void BadInputNamesTheArgument()
    {
        using var cache = new KvCache(Backends.Cpu, SmallConfig(KvDType.F16, 10));
        using var other = new KvCache(Backends.Cpu, new KvCacheConfig(2, 8, 2, 6, KvDType.F16, 1 << 20));
        cache.AddSample(1);
        Assert.That(Assert.Throws<ArgumentException>(() => cache.AddSample(1))!.ParamName, Is.EqualTo("sample"));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.TryReserve(2, 1))!.ParamName, Is.EqualTo("sample"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => cache.TryReserve(1, -1))!.ParamName, Is.EqualTo("newTokens"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => cache.Keys(2))!.ParamName, Is.EqualTo("layer"));
        Assert.That(cache.TryReserve(1, 4), Is.True);
        Assert.Throws<InvalidOperationException>(() => cache.TryReserve(1, 1));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.Commit(1, new[] { 2, 1 }))!.ParamName, Is.EqualTo("acceptedNodes"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => cache.Commit(1, new[] { 4 }))!.ParamName, Is.EqualTo("acceptedNodes"));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.Commit(new[] { 1, 1 }, new[] { 0, 1, 2 }, new[] { 0, 0 }))!.ParamName, Is.EqualTo("samples"));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.Commit(new[] { 1 }, new[] { 0, 2 }, new[] { 0 }))!.ParamName, Is.EqualTo("acceptedOffsets"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => cache.Slot(1, 4))!.ParamName, Is.EqualTo("position"));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.PendingSlots(1, new int[3]))!.ParamName, Is.EqualTo("slots"));
        Assert.That(cache.PendingLength(1), Is.EqualTo(4), "failed commits change nothing");
        Assert.Throws<InvalidOperationException>(() => cache.TryCopySampleTo(1, cache, 5));
        cache.Commit(1, new[] { 0, 1 });
        Assert.Throws<InvalidOperationException>(() => cache.TryCopySampleTo(1, cache, 5), "rejected tokens not rolled back");
        Assert.Throws<InvalidOperationException>(() => cache.Commit(1, new[] { 0 }), "a second commit before the rollback");
        cache.Rollback(1);
        Assert.That(Assert.Throws<ArgumentException>(() => cache.TryCopySampleTo(1, other, 1))!.ParamName, Is.EqualTo("target"));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.TryCopySampleTo(1, cache, 1))!.ParamName, Is.EqualTo("targetSample"));
        Assert.That(Assert.Throws<ArgumentException>(() => cache.FillBlockTables(new[] { 1 }, 0, new int[1], new int[1]))!.ParamName, Is.EqualTo("maxBlocksPerSample"));
        Assert.That(Assert.Throws<ArgumentException>(() => new KvCache(Backends.Cpu, new KvCacheConfig(0, 4, 2, 6, KvDType.F16, 1 << 20)))!.ParamName, Is.EqualTo("config"));
        Assert.That(Assert.Throws<ArgumentException>(() => new KvCache(Backends.Cpu, new KvCacheConfig(1, 4, 2, 5, KvDType.F16, 1 << 20)))!.ParamName, Is.EqualTo("config"));
    }

    /// <summary>
    /// What the cache must hold: per sample, per layer and K/V, the packed words of every committed position; and
    /// the pending rows of the current step until it is committed.
    /// </summary>
    private sealed class HostModel
    {
        private readonly KvCache _cache;
        private readonly Dictionary<int, List<uint[]>[]> _committed = new();
        private readonly Dictionary<int, List<uint[]>[]> _pending = new();

        public HostModel(KvCache cache) => _cache = cache;

        private int Streams => 2 * _cache.NumLayers;

        public int BlocksOf(int sample) => (_committed[sample][0].Count + _cache.BlockSize - 1) / _cache.BlockSize;

        public void Forget(int sample) => _committed.Remove(sample);

        /// <summary>Reserve, append random K/V for every layer, commit all or a random ascending subset per sample.</summary>
        public void Step(Random rng, int[] samples, int[] newTokens, bool acceptAll)
        {
            for (int i = 0; i < samples.Length; i++) Assert.That(_cache.TryReserve(samples[i], newTokens[i]), Is.True, $"reserve {newTokens[i]} for {samples[i]}");
            AppendPending(rng, samples);
            var offsets = new List<int> { 0 };
            var nodes = new List<int>();
            foreach (int s in samples)
            {
                int pending = _cache.PendingLength(s);
                nodes.AddRange(Enumerable.Range(0, pending).Where(_ => acceptAll || rng.Next(3) != 0));
                offsets.Add(nodes.Count);
            }
            _cache.Commit(samples, offsets.ToArray(), nodes.ToArray());
            _cache.Rollback(samples);
            for (int i = 0; i < samples.Length; i++)
                Accept(samples[i], nodes.GetRange(offsets[i], offsets[i + 1] - offsets[i]));
        }

        public void AppendPending(Random rng, int[] samples)
        {
            var layout = _cache.Layout;
            int tokens = samples.Sum(_cache.PendingLength);
            var slots = new int[tokens];
            _cache.PendingSlots(samples, slots);
            foreach (int s in samples) _pending[s] = NewStreams();
            using var keys = _cache.Backend.Allocate<float>(Math.Max(1, tokens * layout.RowElements), "new-keys");
            using var values = _cache.Backend.Allocate<float>(Math.Max(1, tokens * layout.RowElements), "new-values");
            for (int l = 0; l < _cache.NumLayers; l++)
            {
                var k = KvMoveTests.RandomFloats(rng, tokens * layout.RowElements);
                var v = KvMoveTests.RandomFloats(rng, tokens * layout.RowElements);
                keys.Write(k);
                values.Write(v);
                _cache.Append(l, keys, values, slots);
                int t = 0;
                foreach (int s in samples)
                    for (int j = 0; j < _cache.PendingLength(s); j++, t++)
                    {
                        _pending[s][2 * l].Add(Pack(k, t));
                        _pending[s][2 * l + 1].Add(Pack(v, t));
                    }
            }
        }

        public void CommitAll(int sample) => Accept(sample, Enumerable.Range(0, _pending[sample][0].Count).ToList());

        /// <summary>The sample keeps <paramref name="nodes"/> of its pending rows (none: the step was rolled back whole).</summary>
        public void Keep(int sample, List<int> nodes) => Accept(sample, nodes);

        private void Accept(int sample, List<int> nodes)
        {
            if (!_committed.ContainsKey(sample)) _committed[sample] = NewStreams();
            for (int st = 0; st < Streams; st++)
                foreach (int n in nodes) _committed[sample][st].Add(_pending[sample][st][n]);
            _pending.Remove(sample);
        }

        private List<uint[]>[] NewStreams() => Enumerable.Range(0, Streams).Select(_ => new List<uint[]>()).ToArray();

        private uint[] Pack(float[] rows, int t)
        {
            var layout = _cache.Layout;
            var one = new KvLayout(1, 1, layout.NumKvHeads, layout.HeadDim, layout.DType);
            var words = new uint[one.TotalWords];
            ReferenceKvMove.Append(rows.AsSpan(t * layout.RowElements, layout.RowElements).ToArray(), words, one, new[] { 0 });
            return words;
        }

        public List<uint[]>[] Committed(int sample) => _committed[sample];

        /// <summary>Every committed position of every sample of the model holds its words in the cache.</summary>
        public void Check()
        {
            foreach (var (s, streams) in _committed) CheckAgainst(_cache, streams, s);
        }

        /// <summary>Sample <paramref name="inCache"/> of <paramref name="cache"/> holds exactly <paramref name="streams"/>.</summary>
        public static void CheckAgainst(KvCache cache, List<uint[]>[] streams, int inCache)
        {
            Assert.That(cache.ContextLength(inCache), Is.EqualTo(streams[0].Count), $"context of {inCache}");
            int rowWords = cache.Layout.RowWords;
            for (int l = 0; l < cache.NumLayers; l++)
            {
                var k = cache.Keys(l).ToArray();
                var v = cache.Values(l).ToArray();
                for (int p = 0; p < streams[0].Count; p++)
                {
                    int slot = cache.Slot(inCache, p);
                    Assert.That(k.AsSpan(slot * rowWords, rowWords).SequenceEqual(streams[2 * l][p]), $"K layer {l}, sample {inCache}, position {p}");
                    Assert.That(v.AsSpan(slot * rowWords, rowWords).SequenceEqual(streams[2 * l + 1][p]), $"V layer {l}, sample {inCache}, position {p}");
                }
            }
        }
    }
}
