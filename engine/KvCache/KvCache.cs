using System.Buffers;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine;

/// <summary>
/// The engine's paged KV cache: per layer a K and a V buffer of <see cref="Layout"/> (// [NumBlocks, BlockSize,
/// NumKvHeads, HeadDim] as words), a block allocator, and per sample a block table, a committed context length and
/// the slots reserved for the current step.
/// <para>A step: <see cref="TryReserve"/> the new tokens (false = out of blocks: preempt a sample, nothing was
/// changed), get their <see cref="PendingSlots(int, Span{int})"/>, <see cref="Append"/> K and V per layer, run
/// attention (<see cref="FillBlockTables"/>), then <see cref="Commit(int, ReadOnlySpan{int})"/> the accepted nodes:
/// their rows are compacted right after the context (kv_move, every layer, one segment per sample); the other
/// pending tokens are then rejected, holding their blocks until <see cref="Rollback(int)"/> discards them and frees
/// the blocks no longer needed. Samples never share blocks, so one sample's writes never touch another's.</para>
/// Not thread-safe: one generation instance owns it. Kernels are recorded on the backend, not waited for.
/// </summary>
public sealed class KvCache : IDisposable
{
    private readonly DeviceBuffer<uint>[] _keys;
    private readonly DeviceBuffer<uint>[] _values;
    private readonly BlockAllocator _allocator;
    private readonly Dictionary<int, KvCacheSample> _samples = new();

    public KvCache(ComputeBackend backend, KvCacheConfig config)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(config);
        Backend = backend;
        Config = config;
        Layout = config.Layout(NumBlocksFor(config, backend.Info.Limits));
        _allocator = new BlockAllocator(Layout.NumBlocks);
        _keys = new DeviceBuffer<uint>[config.NumLayers];
        _values = new DeviceBuffer<uint>[config.NumLayers];
        try
        {
            for (int l = 0; l < config.NumLayers; l++)
            {
                _keys[l] = backend.Allocate<uint>(Layout.TotalWords, $"kv-cache.layer{l}.k");
                _values[l] = backend.Allocate<uint>(Layout.TotalWords, $"kv-cache.layer{l}.v");
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// Blocks that fit the memory budget, capped so one layer's buffer stays within one storage-buffer binding
    /// (attention binds a layer's cache whole) and slot indices stay within int.
    /// </summary>
    public static int NumBlocksFor(KvCacheConfig config, DeviceLimits limits)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(nameof(config));
        long blockBytes = config.Layout(1).BlockWords * (long)sizeof(uint);
        long blocks = config.MemoryBudgetBytes / config.BytesPerBlock;
        blocks = Math.Min(blocks, limits.MaxStorageBufferRange / blockBytes);
        blocks = Math.Min(blocks, int.MaxValue / config.BlockSize);
        if (blocks < 1)
            throw new ArgumentException($"config: a budget of {config.MemoryBudgetBytes} bytes holds no block of {config.BytesPerBlock} bytes " +
                $"(or one layer's block of {blockBytes} bytes exceeds maxStorageBufferRange {limits.MaxStorageBufferRange})", nameof(config));
        return (int)blocks;
    }

    public ComputeBackend Backend { get; }
    public KvCacheConfig Config { get; }
    /// <summary>Layout of every layer's K and V buffer.</summary>
    public KvLayout Layout { get; }
    public int NumLayers => Config.NumLayers;
    public int BlockSize => Layout.BlockSize;
    public int NumBlocks => Layout.NumBlocks;
    public int FreeBlocks => _allocator.FreeBlocks;

    /// <summary>Layer <paramref name="layer"/>'s K cache // [NumBlocks, BlockSize, NumKvHeads, HeadDim] as words.</summary>
    public DeviceBuffer<uint> Keys(int layer) => _keys[CheckLayer(layer)];

    /// <summary>Layer <paramref name="layer"/>'s V cache, same layout as <see cref="Keys"/>.</summary>
    public DeviceBuffer<uint> Values(int layer) => _values[CheckLayer(layer)];

    // ---- samples ----

    public IEnumerable<int> Samples => _samples.Keys;

    public bool Contains(int sample) => _samples.ContainsKey(sample);

    /// <summary>Registers an empty sample (no blocks yet).</summary>
    public void AddSample(int sample)
    {
        if (!_samples.TryAdd(sample, new KvCacheSample()))
            throw new ArgumentException($"sample: {sample} is already in this cache", nameof(sample));
    }

    /// <summary>Committed tokens of <paramref name="sample"/>.</summary>
    public int ContextLength(int sample) => Get(sample).ContextLength;

    /// <summary>Tokens reserved by <see cref="TryReserve"/> and not yet committed.</summary>
    public int PendingLength(int sample) => Get(sample).PendingLength;

    /// <summary>Tokens a commit left out (rejected), holding their slots until <see cref="Rollback(int)"/>.</summary>
    public int RejectedLength(int sample) => Get(sample).RejectedLength;

    /// <summary>Physical blocks of <paramref name="sample"/>, logical block order.</summary>
    public IReadOnlyList<int> BlockTable(int sample) => Get(sample).Blocks;

    /// <summary>Blocks <see cref="TryReserve"/> would take for <paramref name="newTokens"/> (0 when they fit in its blocks).</summary>
    public int BlocksNeeded(int sample, int newTokens)
    {
        var s = Get(sample);
        if (newTokens < 0) throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens, "must be >= 0");
        long tokens = (long)s.ContextLength + newTokens;
        return (int)Math.Max(0, (tokens + BlockSize - 1) / BlockSize - s.Blocks.Count);
    }

    /// <summary>
    /// Reserves slots for <paramref name="newTokens"/> tokens after the committed context (positions ContextLength ..
    /// ContextLength + newTokens − 1). Returns false when the cache is out of blocks — the preemption signal — and
    /// then changes nothing. The sample must have no uncommitted tokens (commit, then <see cref="Rollback(int)"/> the rest).
    /// </summary>
    public bool TryReserve(int sample, int newTokens)
    {
        var s = Get(sample);
        if (s.UncommittedLength != 0)
            throw new InvalidOperationException($"sample {sample} has {s.UncommittedLength} uncommitted tokens: commit or roll them back first");
        int needed = BlocksNeeded(sample, newTokens);
        if ((long)s.ContextLength + newTokens > (long)NumBlocks * BlockSize) return false;
        if (needed > 0)
        {
            Span<int> blocks = needed <= 256 ? stackalloc int[needed] : new int[needed];
            if (!_allocator.TryAllocate(blocks)) return false;
            foreach (int b in blocks) s.Blocks.Add(b);
        }
        s.PendingLength = newTokens;
        return true;
    }

    /// <summary>
    /// Reserves <paramref name="moreTokens"/> further slots after the pending ones (a step fed in several forwards,
    /// e.g. a draft model drafting token by token). Returns false, changing nothing, when the cache is out of blocks.
    /// </summary>
    public bool TryExtend(int sample, int moreTokens)
    {
        var s = Get(sample);
        if (moreTokens < 0) throw new ArgumentOutOfRangeException(nameof(moreTokens), moreTokens, "must be >= 0");
        if (s.RejectedLength != 0)
            throw new InvalidOperationException($"sample {sample} has {s.RejectedLength} rejected tokens: roll them back first");
        int needed = BlocksNeeded(sample, s.PendingLength + moreTokens);
        if ((long)s.ContextLength + s.PendingLength + moreTokens > (long)NumBlocks * BlockSize) return false;
        if (needed > 0)
        {
            Span<int> blocks = needed <= 256 ? stackalloc int[needed] : new int[needed];
            if (!_allocator.TryAllocate(blocks)) return false;
            foreach (int b in blocks) s.Blocks.Add(b);
        }
        s.PendingLength += moreTokens;
        return true;
    }

    /// <summary>Cache slot (block * BlockSize + offset) of token <paramref name="position"/> of <paramref name="sample"/>.</summary>
    public int Slot(int sample, int position)
    {
        var s = Get(sample);
        if (position < 0 || position >= s.ContextLength + s.PendingLength)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"sample {sample} has {s.ContextLength} committed and {s.PendingLength} pending tokens");
        return SlotOf(s, position);
    }

    /// <summary>Slots of <paramref name="sample"/>'s pending tokens, in order, into <paramref name="slots"/> [PendingLength].</summary>
    public void PendingSlots(int sample, Span<int> slots)
    {
        var s = Get(sample);
        KernelValidation.RequireLength<int>(slots, s.PendingLength, nameof(slots));
        for (int j = 0; j < s.PendingLength; j++) slots[j] = SlotOf(s, s.ContextLength + j);
    }

    /// <summary>
    /// Slots of the pending tokens of <paramref name="samples"/>, flattened in sample order (the ragged token batch of
    /// a step); returns how many were written.
    /// </summary>
    public int PendingSlots(ReadOnlySpan<int> samples, Span<int> slots)
    {
        int total = 0;
        foreach (int sample in samples) total += Get(sample).PendingLength;
        KernelValidation.Require(slots.Length >= total, nameof(slots), $"length {slots.Length}, needs {total}");
        int at = 0;
        foreach (int sample in samples)
        {
            var s = Get(sample);
            PendingSlots(sample, slots.Slice(at, s.PendingLength));
            at += s.PendingLength;
        }
        return total;
    }

    /// <summary>Writes new K and V rows // [slots.Length, NumKvHeads * HeadDim] fp32 of layer <paramref name="layer"/> into <paramref name="slots"/>.</summary>
    public void Append(int layer, DeviceBuffer<float> keys, DeviceBuffer<float> values, ReadOnlySpan<int> slots)
    {
        CheckLayer(layer);
        Backend.AppendKv(keys, _keys[layer], Layout, slots);
        Backend.AppendKv(values, _values[layer], Layout, slots);
    }

    /// <summary>Commits one sample's accepted nodes; see <see cref="Commit(ReadOnlySpan{int}, ReadOnlySpan{int}, ReadOnlySpan{int})"/>.</summary>
    public void Commit(int sample, ReadOnlySpan<int> acceptedNodes)
    {
        ReadOnlySpan<int> samples = stackalloc int[] { sample };
        ReadOnlySpan<int> offsets = stackalloc int[] { 0, acceptedNodes.Length };
        Commit(samples, offsets, acceptedNodes);
    }

    /// <summary>
    /// Discards the uncommitted tokens of <paramref name="sample"/> — the ones its last commit rejected, or pending
    /// ones never committed (a step abandoned) — and frees the blocks the committed context no longer needs. Moves no
    /// data: the discarded rows are simply no longer addressed.
    /// </summary>
    public void Rollback(int sample)
    {
        var s = Get(sample);
        s.PendingLength = 0;
        s.RejectedLength = 0;
        TrimBlocks(s);
    }

    /// <summary>Rolls back several samples, in order, as one <see cref="Rollback(int)"/> each.</summary>
    public void Rollback(ReadOnlySpan<int> samples)
    {
        foreach (int sample in samples) Get(sample);
        foreach (int sample in samples) Rollback(sample);
    }

    /// <summary>
    /// Commits a step for several samples. Sample i keeps the pending tokens acceptedNodes[acceptedOffsets[i] ..
    /// acceptedOffsets[i + 1]) — indices into its pending tokens, strictly ascending (a root-to-leaf path of a draft
    /// tree numbered parents first; a chain's accepted prefix is 0 .. k−1) — which move to positions ContextLength,
    /// ContextLength + 1, ... in every layer. Commit only keeps: the other pending tokens become rejected, still
    /// holding their blocks, until <see cref="Rollback(int)"/> discards them (nothing else may be reserved for the
    /// sample before that). All arguments are checked before anything changes.
    /// </summary>
    public void Commit(ReadOnlySpan<int> samples, ReadOnlySpan<int> acceptedOffsets, ReadOnlySpan<int> acceptedNodes)
    {
        KernelValidation.RequireOffsets(acceptedOffsets, samples.Length, nameof(acceptedOffsets));
        KernelValidation.Require(acceptedOffsets[^1] == acceptedNodes.Length, nameof(acceptedOffsets),
            $"last offset {acceptedOffsets[^1]} must equal acceptedNodes.Length {acceptedNodes.Length}");
        for (int i = 0; i < samples.Length; i++)
        {
            var s = Get(samples[i]);
            for (int j = 0; j < i; j++)
                if (samples[j] == samples[i]) throw new ArgumentException($"samples: sample {samples[i]} appears twice", nameof(samples));
            if (s.RejectedLength != 0)
                throw new InvalidOperationException($"sample {samples[i]} has {s.RejectedLength} rejected tokens of its last commit: roll them back first");
            for (int k = acceptedOffsets[i]; k < acceptedOffsets[i + 1]; k++)
            {
                int node = acceptedNodes[k];
                if (node < 0 || node >= s.PendingLength)
                    throw new ArgumentOutOfRangeException(nameof(acceptedNodes), $"acceptedNodes[{k}] = {node}: sample {samples[i]} has {s.PendingLength} pending tokens");
                if (k > acceptedOffsets[i] && node <= acceptedNodes[k - 1])
                    throw new ArgumentException($"acceptedNodes: sample {samples[i]}'s accepted nodes must be strictly ascending ({acceptedNodes[k - 1]}, {node})", nameof(acceptedNodes));
            }
        }

        // Pairs that actually move (a node already at its place — an accepted prefix — needs no copy).
        int[] rows = ArrayPool<int>.Shared.Rent(2 * acceptedNodes.Length + samples.Length + 1);
        try
        {
            var source = rows.AsSpan(0, acceptedNodes.Length);
            var destination = rows.AsSpan(acceptedNodes.Length, acceptedNodes.Length);
            var segments = rows.AsSpan(2 * acceptedNodes.Length, samples.Length + 1);
            int pairs = 0;
            segments[0] = 0;
            for (int i = 0; i < samples.Length; i++)
            {
                var s = _samples[samples[i]];
                for (int k = acceptedOffsets[i]; k < acceptedOffsets[i + 1]; k++)
                {
                    int j = k - acceptedOffsets[i], node = acceptedNodes[k];
                    if (node == j) continue;
                    source[pairs] = SlotOf(s, s.ContextLength + node);
                    destination[pairs] = SlotOf(s, s.ContextLength + j);
                    pairs++;
                }
                segments[i + 1] = pairs;
            }
            if (pairs > 0)
                for (int l = 0; l < NumLayers; l++)
                {
                    Backend.CopyKv(_keys[l], _keys[l], source[..pairs], destination[..pairs], segments, Layout.RowWords);
                    Backend.CopyKv(_values[l], _values[l], source[..pairs], destination[..pairs], segments, Layout.RowWords);
                }
        }
        finally { ArrayPool<int>.Shared.Return(rows); }

        for (int i = 0; i < samples.Length; i++)
        {
            var s = _samples[samples[i]];
            int kept = acceptedOffsets[i + 1] - acceptedOffsets[i];
            s.ContextLength += kept;
            s.RejectedLength = s.PendingLength - kept;
            s.PendingLength = 0;
        }
    }

    /// <summary>Frees all blocks of <paramref name="sample"/> and forgets it.</summary>
    public void Release(int sample)
    {
        var s = Get(sample);
        foreach (int b in s.Blocks) _allocator.Free(b);
        _samples.Remove(sample);
    }

    /// <summary>
    /// Copies the committed KV of <paramref name="sample"/> into <paramref name="target"/> as a new sample
    /// <paramref name="targetSample"/> (the basis of migration; the caller releases the source afterwards). Same
    /// backend: kv_move block copies, one segment per block; another backend: staged through host memory. Returns
    /// false, changing nothing, when <paramref name="target"/> is out of blocks. The sample must have no pending tokens.
    /// </summary>
    public bool TryCopySampleTo(int sample, KvCache target, int targetSample)
    {
        ArgumentNullException.ThrowIfNull(target);
        var s = Get(sample);
        if (s.UncommittedLength != 0)
            throw new InvalidOperationException($"sample {sample} has {s.UncommittedLength} uncommitted tokens: commit or roll them back before copying it");
        return TryCopyBlocks(s.Blocks.ToArray(), s.ContextLength, target, targetSample);
    }

    /// <summary>
    /// Captures the committed blocks of <paramref name="sample"/> for <see cref="TryCopySnapshotTo"/>, a copy that may
    /// run on another thread while this cache's owner goes on with its other samples: the copy reads only these
    /// blocks (and the cache's buffers, fixed for its life), never the cache's tables. The owner must neither write
    /// to the sample nor release it until the copy has ended. The sample must have no pending tokens.
    /// </summary>
    public KvCacheSnapshot Snapshot(int sample)
    {
        var s = Get(sample);
        if (s.UncommittedLength != 0)
            throw new InvalidOperationException($"sample {sample} has {s.UncommittedLength} uncommitted tokens: commit or roll them back before copying it");
        return new KvCacheSnapshot(this, s.Blocks.ToArray(), s.ContextLength);
    }

    /// <summary>
    /// Copies a <see cref="Snapshot"/> of this cache into <paramref name="target"/> as <paramref name="targetSample"/>;
    /// as <see cref="TryCopySampleTo"/>, false (nothing changed) when the target is out of blocks. Touches this
    /// cache's buffers only (safe beside its owner's forwards over other samples where the backend allows concurrent
    /// use, <see cref="BackendCapabilities.ConcurrentKernels"/>) and the target's tables (call it on the target's owner's thread).
    /// </summary>
    public bool TryCopySnapshotTo(KvCacheSnapshot snapshot, KvCache target, int targetSample)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        if (!ReferenceEquals(snapshot.Source, this)) throw new ArgumentException("snapshot: taken of another cache", nameof(snapshot));
        return TryCopyBlocks(snapshot.Blocks, snapshot.ContextLength, target, targetSample);
    }

    private bool TryCopyBlocks(int[] blocks, int contextLength, KvCache target, int targetSample)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (!target.Config.SameBlockShape(Config))
            throw new ArgumentException($"target: its blocks ({target.Config}) differ in shape from this cache's ({Config})", nameof(target));
        if (target.Contains(targetSample))
            throw new ArgumentException($"targetSample: {targetSample} is already in the target cache", nameof(targetSample));

        int n = blocks.Length;
        int[] rented = ArrayPool<int>.Shared.Rent(3 * n + 1);
        try
        {
            var from = blocks.AsSpan();
            var to = rented.AsSpan(n, n);
            var segments = rented.AsSpan(2 * n, n + 1);
            if (!target._allocator.TryAllocate(to)) return false;
            var copy = new KvCacheSample { ContextLength = contextLength };
            foreach (int b in to) copy.Blocks.Add(b);
            target._samples.Add(targetSample, copy);
            if (n == 0) return true;

            if (ReferenceEquals(target.Backend, Backend))
            {
                // Fresh target blocks are written by exactly one pair each: every pair may run in parallel.
                for (int i = 0; i <= n; i++) segments[i] = i;
                for (int l = 0; l < NumLayers; l++)
                {
                    Backend.CopyKv(_keys[l], target._keys[l], from, to, segments, Layout.BlockWords);
                    Backend.CopyKv(_values[l], target._values[l], from, to, segments, Layout.BlockWords);
                }
            }
            else
            {
                uint[] staging = ArrayPool<uint>.Shared.Rent(Layout.BlockWords);
                bool hostTarget = target.Backend.Capabilities.HostAddressable, hostSource = Backend.Capabilities.HostAddressable;
                try
                {
                    for (int l = 0; l < NumLayers; l++)
                    {
                        StageBlocks(_keys[l], target._keys[l], from, to, staging, hostSource, hostTarget);
                        StageBlocks(_values[l], target._values[l], from, to, staging, hostSource, hostTarget);
                    }
                }
                finally { ArrayPool<uint>.Shared.Return(staging); }
            }
            return true;
        }
        finally { ArrayPool<int>.Shared.Return(rented); }
    }

    // ---- attention metadata ----

    /// <summary>Largest block table among <paramref name="samples"/> (the row stride of <see cref="FillBlockTables"/>).</summary>
    public int MaxBlocksPerSample(ReadOnlySpan<int> samples)
    {
        int max = 0;
        foreach (int sample in samples) max = Math.Max(max, Get(sample).Blocks.Count);
        return max;
    }

    /// <summary>
    /// Block tables and committed lengths of <paramref name="samples"/> in the form <see cref="AttentionBatch"/> takes:
    /// <paramref name="blockTables"/> // [samples.Length, maxBlocksPerSample], unused entries 0;
    /// <paramref name="contextLens"/> [samples.Length]. Tables include the blocks of pending tokens.
    /// </summary>
    public void FillBlockTables(ReadOnlySpan<int> samples, int maxBlocksPerSample, Span<int> blockTables, Span<int> contextLens)
    {
        KernelValidation.Require(maxBlocksPerSample >= MaxBlocksPerSample(samples), nameof(maxBlocksPerSample),
            $"{maxBlocksPerSample} is less than the largest block table ({MaxBlocksPerSample(samples)})");
        KernelValidation.Require(blockTables.Length >= (long)samples.Length * maxBlocksPerSample, nameof(blockTables),
            $"length {blockTables.Length}, needs {(long)samples.Length * maxBlocksPerSample}");
        KernelValidation.Require(contextLens.Length >= samples.Length, nameof(contextLens), $"length {contextLens.Length}, needs {samples.Length}");
        for (int i = 0; i < samples.Length; i++)
        {
            var s = Get(samples[i]);
            var row = blockTables.Slice(i * maxBlocksPerSample, maxBlocksPerSample);
            row.Clear();
            for (int b = 0; b < s.Blocks.Count; b++) row[b] = s.Blocks[b];
            contextLens[i] = s.ContextLength;
        }
    }

    public void Dispose()
    {
        foreach (var b in _keys) b?.Dispose();
        foreach (var b in _values) b?.Dispose();
    }

    private KvCacheSample Get(int sample) =>
        _samples.TryGetValue(sample, out var s) ? s : throw new ArgumentException($"sample: {sample} is not in this cache", nameof(sample));

    private int CheckLayer(int layer) =>
        (uint)layer < (uint)NumLayers ? layer : throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the cache has {NumLayers} layers");

    private int SlotOf(KvCacheSample s, int position) => s.Blocks[position / BlockSize] * BlockSize + position % BlockSize;

    /// <summary>
    /// Copies blocks between buffers of different backends through host memory: straight into or out of a
    /// host-addressable buffer (<see cref="BackendCapabilities.HostAddressable"/>) when one side is one, else through
    /// <paramref name="staging"/>.
    /// </summary>
    private void StageBlocks(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> from, ReadOnlySpan<int> to, uint[] staging,
        bool hostSource, bool hostDestination)
    {
        int words = Layout.BlockWords;
        for (int i = 0; i < from.Length; i++)
        {
            long at = (long)from[i] * words, into = (long)to[i] * words;
            if (hostDestination) source.Read(destination.HostSpan(into, words), at);
            else if (hostSource) destination.Write(source.HostSpan(at, words), into);
            else
            {
                source.Read(staging.AsSpan(0, words), at);
                destination.Write(staging.AsSpan(0, words), into);
            }
        }
    }

    /// <summary>Frees blocks beyond those the committed, pending and rejected tokens need.</summary>
    private void TrimBlocks(KvCacheSample s)
    {
        int keep = (s.ContextLength + s.UncommittedLength + BlockSize - 1) / BlockSize;
        for (int b = s.Blocks.Count - 1; b >= keep; b--)
        {
            _allocator.Free(s.Blocks[b]);
            s.Blocks.RemoveAt(b);
        }
    }
}
