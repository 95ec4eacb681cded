using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Model.Transformer.Dense;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>
/// A Llama/Qwen2-family decoder for generation: per layer, ONNX Runtime runs the dense part before attention
/// (RMSNorm, q/k/v projections, RoPE), the engine appends k/v to its paged KV cache and runs attention over it
/// with a causal or tree mask, ONNX Runtime runs the dense part after it (output projection, residual, RMSNorm,
/// SwiGLU MLP); the final norm and LM head run only for the rows that need logits. Every forward is one
/// flattened ragged batch (prefill, decode and tree verification alike). Weights are the shared
/// <see cref="TransformerWeights"/> arena: a training step that updates it in place is seen by the next forward.
/// </summary>
/// <remarks>
/// Tentative tokens (fed since a sample's last <see cref="Commit(long, ReadOnlySpan{int})"/>, which keeps some of them; <see cref="Rollback(long)"/>
/// discards the rest) usually come in one forward (a prompt, a
/// decode token, a draft tree). They may also come in several forwards — a draft model drafting token by token —
/// as long as the earlier ones form a chain that the later ones descend from; anything else is rejected with a
/// clear error rather than computed with the wrong mask. Not thread-safe: one generation instance owns a model.
/// </remarks>
public sealed class TransformerModel : ITargetModel, IMigratableModel, IAttentionClock, IDisposable
{
    private sealed class Sample
    {
        public required int CacheId;
        public readonly List<int> Parents = new(); // tentative tokens' parents, feeding order
        public readonly List<int> Depths = new();  // 1 = child of the committed context
        public bool Chain = true;                  // tentative tokens so far form a chain 0, 1, 2, …
    }

    private readonly Dictionary<long, Sample> _samples = new();
    private readonly bool _ownsWeights;
    private readonly IDenseExecutor _dense;
    private readonly DenseActivations _act;
    private int _nextCacheId;

    // Per-forward plan, in buffers reused from forward to forward.
    private Sample[] _entries = [];
    private int[] _cacheIds = [], _contextLens = [], _committedLens = [], _slots = [], _blockTables = [], _rollbackIds = [];
    private uint[] _mask = [];
    private DeviceBuffer<float>? _qDevice, _kDevice, _vDevice, _oDevice;

    /// <summary>A model over <paramref name="weights"/> (not copied; the caller keeps ownership unless <paramref name="ownsWeights"/>).</summary>
    public TransformerModel(TransformerWeights weights, ComputeBackend backend, TransformerOptions? options = null, bool ownsWeights = false)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(backend);
        Options = options ?? new TransformerOptions();
        Options.Validate();
        Weights = weights;
        Backend = backend;
        _ownsWeights = ownsWeights;
        var spec = weights.Spec;
        MaxContext = Math.Min(Options.MaxContext ?? weights.Config.MaxPositionEmbeddings, weights.Config.MaxPositionEmbeddings);
        Cache = new KvCache(backend, new KvCacheConfig(spec.NumLayers, Options.KvBlockSize, spec.NumKvHeads, spec.HeadDim, Options.KvDType, Options.KvMemoryBudgetBytes));
        _act = new DenseActivations(spec);
        try
        {
            DenseChoice = Options.ResolveDense(backend.Info);
            _dense = DenseChoice.Kind switch
            {
                DenseExecutorKind.Managed => new ManagedDenseExecutor(weights, MaxContext, SharedWorkers(backend, Options), ManagedThreads(Options)),
                DenseExecutorKind.Vulkan => backend is Engine.Vulkan.VulkanBackend vulkan
                    ? new VulkanDenseExecutor(weights, vulkan, MaxContext, Options.DenseHalfWeights)
                    : throw new ArgumentException($"--dense vulkan: the dense layers on Vulkan need a Vulkan device (--device vulkan), not {backend.Info.Id}", nameof(options)),
                // Short runs interleaved with engine kernels on the same cores: no busy-waiting ONNX Runtime workers.
                _ => new OnnxDenseExecutor(weights, Options.Session with { AllowSpinning = false }),
            };
        }
        catch
        {
            Cache.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The CPU backend's pool when its size is what the options ask for (no intra-op threads given, or as many as the
    /// backend has), so the attention kernels and the dense layers share one set of threads; else null (an own pool).
    /// </summary>
    private static CpuWorkers? SharedWorkers(ComputeBackend backend, TransformerOptions options) =>
        backend is CpuBackend cpu && (options.Session.IntraOpThreads <= 0 || options.Session.IntraOpThreads == cpu.Threads) ? cpu.Workers : null;

    /// <summary>Workers of a managed executor without a CPU backend's pool: the session's intra-op threads, else every core.</summary>
    private static int ManagedThreads(TransformerOptions options) =>
        options.Session.IntraOpThreads > 0 ? options.Session.IntraOpThreads : Environment.ProcessorCount;

    /// <summary>What runs the dense layers ("managed", "onnx", "vulkan" or "vulkan-f16").</summary>
    public string DenseExecutor => _dense.Name;

    /// <summary>The dense executor <see cref="TransformerOptions.Dense"/> resolved to on this model's device, and why.</summary>
    public DenseExecutorChoice DenseChoice { get; }

    /// <summary>
    /// Makes the next forward see the weights as they are now in <see cref="Weights"/> (call after an optimizer step):
    /// a no-op for the executors that read the arena in place, a copy to the device for the Vulkan one. Returns seconds.
    /// </summary>
    public double RefreshWeights() => _dense.Refresh();

    /// <summary>The Vulkan dense executor when it runs on this model's own backend: the whole forward then stays on the device.</summary>
    private VulkanDenseExecutor? Resident => _dense is VulkanDenseExecutor v && ReferenceEquals(v.Backend, Backend) ? v : null;

    /// <summary>Loads the HF checkpoint folder <paramref name="folder"/> (the model owns the weights it loaded).</summary>
    public static TransformerModel Load(string folder, ComputeBackend backend, TransformerOptions? options = null)
    {
        var weights = TransformerWeights.Load(folder);
        try { return new TransformerModel(weights, backend, options, ownsWeights: true); }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    public TransformerWeights Weights { get; }
    public TransformerOptions Options { get; }
    public ModelConfig Config => Weights.Config;
    public KvCache Cache { get; }
    public ComputeBackend Backend { get; }
    public int VocabSize => Weights.Spec.VocabSize;
    public int MaxContext { get; }

    /// <summary>Seconds spent in each part of the forwards so far (dense before/after attention, attention with its KV writes, LM head, planning).</summary>
    public ForwardTimings Timings { get; } = new();

    double IAttentionClock.AttentionSeconds => Timings.AttentionSeconds;

    /// <summary>Samples that hold KV blocks or reservations.</summary>
    public int ActiveSamples => _samples.Count;

    public int CommittedLength(long sampleId) => _samples.TryGetValue(sampleId, out var s) ? Cache.ContextLength(s.CacheId) : 0;

    public bool TryReserve(long sampleId, int newTokens)
    {
        if (newTokens < 0) throw new ArgumentOutOfRangeException(nameof(newTokens), newTokens, "must be >= 0");
        if (!_samples.TryGetValue(sampleId, out var s))
        {
            s = new Sample { CacheId = _nextCacheId++ };
            Cache.AddSample(s.CacheId);
            _samples[sampleId] = s;
        }
        if (Cache.RejectedLength(s.CacheId) != 0)
            throw new InvalidOperationException($"sample {sampleId} has tokens its last commit rejected: roll them back first");
        int pending = Cache.PendingLength(s.CacheId), wanted = s.Parents.Count + newTokens;
        if (wanted <= pending) return true;
        return pending == 0 ? Cache.TryReserve(s.CacheId, wanted) : Cache.TryExtend(s.CacheId, wanted - pending);
    }

    public void Forward(in ForwardBatch batch, DeviceBuffer<float> logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        CheckShape(batch, logits);
        if (batch.NumTokens == 0) return;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Timings.Forwards++;
        Timings.Tokens += batch.NumTokens;
        var attention = Plan(batch);
        Timings.PlanSeconds += clock.Elapsed.TotalSeconds;
        if (Resident is { } resident)
        {
            RunOnDevice(batch, attention, resident.OnDevice, logits);
            CommitPlan(batch);
            return;
        }
        RunLayers(batch, attention);
        CommitPlan(batch);
        if (batch.LogitRows.Length > 0) RunHead(batch, logits);
    }

    private void CheckShape(in ForwardBatch batch, DeviceBuffer<float> logits)
    {
        int samples = batch.NumSamples, tokens = batch.NumTokens, rows = batch.LogitRows.Length, vocab = Weights.Spec.VocabSize;
        if (batch.TokenOffsets.Length != samples + 1 || (samples > 0 && batch.TokenOffsets[0] != 0))
            throw new ArgumentException($"batch: {batch.TokenOffsets.Length} token offsets for {samples} samples (need {samples + 1}, starting at 0)", nameof(batch));
        if (batch.Tokens.Length != tokens || batch.Parents.Length != tokens)
            throw new ArgumentException($"batch: {batch.Tokens.Length} tokens and {batch.Parents.Length} parents for offsets ending at {tokens}", nameof(batch));
        if (logits.Length < (long)rows * vocab)
            throw new ArgumentException($"logits: {logits.Length} elements, {rows} rows of {vocab} need {(long)rows * vocab}", nameof(logits));
        for (int r = 0; r < rows; r++)
            if ((uint)batch.LogitRows[r] >= (uint)tokens)
                throw new ArgumentOutOfRangeException(nameof(batch), $"LogitRows[{r}] = {batch.LogitRows[r]} is outside [0, {tokens})");
    }

    /// <summary>
    /// The forward's plan, checked in full before any state changes: each token's position (into the activations)
    /// and KV slot, the samples' contexts and block tables, and the tree mask where the new tokens are not one chain
    /// per sample. Fills reused buffers; returns the attention metadata over them.
    /// </summary>
    private AttentionBatch Plan(in ForwardBatch batch)
    {
        var spec = Weights.Spec;
        int samples = batch.NumSamples, tokens = batch.NumTokens;
        _act.Prepare(tokens, batch.LogitRows.Length);
        Grow(ref _entries, samples);
        Grow(ref _cacheIds, samples);
        Grow(ref _contextLens, samples);
        Grow(ref _committedLens, samples);
        Grow(ref _slots, tokens);
        bool causal = true;
        int maxNew = 0;
        for (int b = 0; b < samples; b++)
        {
            causal &= PlanSample(batch, b);
            maxNew = Math.Max(maxNew, batch.TokenOffsets[b + 1] - batch.TokenOffsets[b]);
        }
        int maskWords = causal ? 0 : TreeMask(batch, maxNew);

        var ids = _cacheIds.AsSpan(0, samples);
        int maxBlocks = Cache.MaxBlocksPerSample(ids);
        Grow(ref _blockTables, (long)samples * maxBlocks);
        Cache.FillBlockTables(ids, maxBlocks, _blockTables.AsSpan(0, samples * maxBlocks), _committedLens.AsSpan(0, samples));
        return new AttentionBatch
        {
            QueryOffsets = batch.TokenOffsets,
            ContextLens = _contextLens.AsSpan(0, samples),
            BlockTables = _blockTables.AsSpan(0, samples * maxBlocks),
            MaxBlocksPerSample = maxBlocks,
            TreeMask = causal ? [] : _mask.AsSpan(0, tokens * maskWords),
            MaskWords = maskWords,
            NumHeads = spec.NumHeads,
            Scale = 1f / MathF.Sqrt(spec.HeadDim),
        };
    }

    /// <summary>
    /// Plans sample <paramref name="b"/> of the batch: checks its reservation, tokens and parents, and sets each new
    /// token's position and KV slot. Returns whether its new tokens continue one chain (a causal mask serves them).
    /// </summary>
    private bool PlanSample(in ForwardBatch batch, int b)
    {
        long id = batch.SampleIds[b];
        var s = _samples.TryGetValue(id, out var found) ? found : throw new InvalidOperationException($"sample {id} is fed without a reservation (call TryReserve first)");
        for (int c = 0; c < b; c++)
            if (batch.SampleIds[c] == id) throw new ArgumentException($"batch: sample {id} appears twice", nameof(batch));
        _entries[b] = s;
        _cacheIds[b] = s.CacheId;
        int first = batch.TokenOffsets[b], n = batch.TokenOffsets[b + 1] - first, prior = s.Parents.Count, vocab = Weights.Spec.VocabSize;
        if (n < 0) throw new ArgumentException($"batch: token offsets decrease at sample {b}", nameof(batch));
        int committed = Cache.ContextLength(s.CacheId);
        if (prior + n > Cache.PendingLength(s.CacheId))
            throw new InvalidOperationException($"sample {id}: {prior + n} tentative tokens exceed its reservation of {Cache.PendingLength(s.CacheId)}");
        _contextLens[b] = committed + prior;
        bool causal = true;
        for (int j = 0; j < n; j++)
        {
            int t = first + j, parent = batch.Parents[t], token = batch.Tokens[t];
            if ((uint)token >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(batch), $"token {t} = {token} is outside the vocabulary [0, {vocab})");
            if (parent < -1 || parent >= prior + j)
                throw new ArgumentException($"batch: token {t} (sample {id}) has parent {parent}; it must be −1 or an earlier tentative token (< {prior + j})", nameof(batch));
            if (prior > 0 && !(s.Chain && parent >= prior - 1))
                throw new NotSupportedException($"sample {id}: token {t} does not descend from every earlier tentative token; a step fed in several forwards must be a chain continued by later forwards");
            int depth = parent < 0 ? 1 : parent < prior ? s.Depths[parent] + 1 : Depth(batch.Parents, first, prior, s, parent) + 1;
            int position = committed + depth - 1;
            if (position >= MaxContext) throw new ArgumentException($"sample {id}: position {position} is beyond the context limit {MaxContext}", nameof(batch));
            _act.SetPosition(t, position);
            _slots[t] = Cache.Slot(s.CacheId, committed + prior + j);
            if (parent != prior + j - 1) causal = false;
        }
        return causal;
    }

    /// <summary>The tree mask // [tokens, maskWords]: bit a of token j's row set when new token a is j or one of its ancestors. Returns maskWords.</summary>
    private int TreeMask(in ForwardBatch batch, int maxNew)
    {
        int tokens = batch.NumTokens, maskWords = Math.Max(1, (maxNew + 31) / 32);
        Grow(ref _mask, (long)tokens * maskWords);
        Array.Clear(_mask, 0, tokens * maskWords);
        for (int b = 0; b < batch.NumSamples; b++)
        {
            int first = batch.TokenOffsets[b], n = batch.TokenOffsets[b + 1] - first, prior = _entries[b].Parents.Count;
            for (int j = 0; j < n; j++)
                for (int a = j; a >= 0; a = batch.Parents[first + a] - prior)
                    _mask[(long)(first + j) * maskWords + a / 32] |= 1u << (a % 32);
        }
        return maskWords;
    }

    /// <summary>Embeds the tokens, then per layer: dense part before attention, KV append, attention, dense part after it.</summary>
    private void RunLayers(in ForwardBatch batch, in AttentionBatch attention)
    {
        var spec = Weights.Spec;
        int tokens = batch.NumTokens, h = spec.HiddenSize, qw = spec.NumHeads * spec.HeadDim, kvw = spec.NumKvHeads * spec.HeadDim;
        EnsureDevice(tokens, qw, kvw);
        var embed = Weights.Arena.Span("model.embed_tokens.weight");
        for (int t = 0; t < tokens; t++) embed.Slice(batch.Tokens[t] * h, h).CopyTo(_act.X.AsSpan(t * h, h));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        _dense.First(_act);
        Timings.DensePreSeconds += clock.Elapsed.TotalSeconds;
        var slots = _slots.AsSpan(0, tokens);
        for (int l = 0; l < spec.NumLayers; l++)
        {
            clock.Restart();
            _kDevice!.Write(_act.K.AsSpan(0, tokens * kvw));
            _vDevice!.Write(_act.V.AsSpan(0, tokens * kvw));
            _qDevice!.Write(_act.Q.AsSpan(0, tokens * qw));
            Cache.Append(l, _kDevice, _vDevice, slots);
            Timings.KvWriteSeconds += clock.Elapsed.TotalSeconds;
            clock.Restart();
            Backend.Attention(attention, _qDevice, Cache.Keys(l), Cache.Values(l), Cache.Layout, _oDevice!);
            _oDevice!.Read(_act.Attended.AsSpan(0, tokens * qw));
            Timings.AttentionSeconds += clock.Elapsed.TotalSeconds;
            clock.Restart();
            _dense.Next(l, _act);
            Timings.DensePostSeconds += clock.Elapsed.TotalSeconds;
        }
    }

    /// <summary>
    /// The forward recorded on the device with no host copy: embedding, per layer the dense part before attention, KV
    /// append, attention and the dense part after it, then the final norm and LM head on the requested rows straight
    /// into <paramref name="logits"/>. Nothing waits here; the caller's read of the logits submits it all at once.
    /// </summary>
    private void RunOnDevice(in ForwardBatch batch, in AttentionBatch attention, VulkanDenseExecutor.DeviceForward device, DeviceBuffer<float> logits)
    {
        int tokens = batch.NumTokens;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        device.First(batch.Tokens, _act.Positions32.AsSpan(0, tokens));
        Timings.DensePreSeconds += clock.Elapsed.TotalSeconds;
        var slots = _slots.AsSpan(0, tokens);
        for (int l = 0; l < Weights.Spec.NumLayers; l++)
        {
            clock.Restart();
            Cache.Append(l, device.K, device.V, slots);
            Timings.KvWriteSeconds += clock.Elapsed.TotalSeconds;
            clock.Restart();
            Backend.Attention(attention, device.Q, Cache.Keys(l), Cache.Values(l), Cache.Layout, device.Attended);
            Timings.AttentionSeconds += clock.Elapsed.TotalSeconds;
            clock.Restart();
            device.Next(l);
            Timings.DensePostSeconds += clock.Elapsed.TotalSeconds;
        }
        clock.Restart();
        device.Head(batch.LogitRows, logits);
        Timings.HeadSeconds += clock.Elapsed.TotalSeconds;
    }

    /// <summary>Records the forward's tentative tokens in the samples' state, now that every kernel ran.</summary>
    private void CommitPlan(in ForwardBatch batch)
    {
        for (int b = 0; b < batch.NumSamples; b++)
        {
            var s = _entries[b];
            int first = batch.TokenOffsets[b], n = batch.TokenOffsets[b + 1] - first, prior = s.Parents.Count;
            for (int j = 0; j < n; j++)
            {
                int parent = batch.Parents[first + j];
                s.Depths.Add(parent < 0 ? 1 : s.Depths[parent] + 1);
                s.Parents.Add(parent);
                if (parent != prior + j - 1) s.Chain = false;
            }
        }
        Array.Clear(_entries, 0, batch.NumSamples);
    }

    /// <summary>Final norm and LM head on the rows that need logits.</summary>
    private void RunHead(in ForwardBatch batch, DeviceBuffer<float> logits)
    {
        int rows = batch.LogitRows.Length, h = Weights.Spec.HiddenSize, vocab = Weights.Spec.VocabSize;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int r = 0; r < rows; r++) _act.X.AsSpan(batch.LogitRows[r] * h, h).CopyTo(_act.HeadRows.AsSpan(r * h, h));
        _dense.Head(_act);
        logits.Write(_act.Logits.AsSpan(0, rows * vocab));
        Timings.HeadSeconds += clock.Elapsed.TotalSeconds;
    }

    /// <summary>Depth of new token <paramref name="node"/> (tentative index ≥ prior) of the batch's sample starting at <paramref name="first"/>.</summary>
    private static int Depth(ReadOnlySpan<int> parents, int first, int prior, Sample s, int node)
    {
        int depth = 0;
        while (node >= prior)
        {
            depth++;
            node = parents[first + node - prior];
        }
        return depth + (node < 0 ? 0 : s.Depths[node]);
    }

    public void Commit(long sampleId, ReadOnlySpan<int> keep)
    {
        var s = CheckedKeep(sampleId, keep);
        Cache.Commit(s.CacheId, keep);
        Committed(s);
    }

    /// <summary>The batch's commit as one <see cref="KvCache.Commit(ReadOnlySpan{int}, ReadOnlySpan{int}, ReadOnlySpan{int})"/>; every path is checked first.</summary>
    public void Commit(ReadOnlySpan<long> sampleIds, ReadOnlySpan<int> keepOffsets, ReadOnlySpan<int> keep)
    {
        if (keepOffsets.Length != sampleIds.Length + 1 || keepOffsets[^1] != keep.Length)
            throw new ArgumentException($"keepOffsets: {keepOffsets.Length} offsets ending at {(keepOffsets.Length > 0 ? keepOffsets[^1] : 0)} for {sampleIds.Length} samples and {keep.Length} kept tokens", nameof(keepOffsets));
        var samples = new Sample[sampleIds.Length];
        var cacheIds = new int[sampleIds.Length];
        for (int i = 0; i < samples.Length; i++)
        {
            samples[i] = CheckedKeep(sampleIds[i], keep[keepOffsets[i]..keepOffsets[i + 1]]);
            cacheIds[i] = samples[i].CacheId;
        }
        Cache.Commit(cacheIds, keepOffsets, keep);
        foreach (var s in samples) Committed(s);
    }

    /// <summary>Discards the sample's rejected or never committed tokens (<see cref="KvCache.Rollback(int)"/>: bookkeeping, no data moves).</summary>
    public void Rollback(long sampleId)
    {
        var s = Known(sampleId);
        Cache.Rollback(s.CacheId);
        Committed(s);
    }

    /// <summary>The batch's rollback as one <see cref="KvCache.Rollback(ReadOnlySpan{int})"/>; every sample is checked first.</summary>
    public void Rollback(ReadOnlySpan<long> sampleIds)
    {
        Grow(ref _rollbackIds, sampleIds.Length);
        for (int i = 0; i < sampleIds.Length; i++) _rollbackIds[i] = Known(sampleIds[i]).CacheId;
        Cache.Rollback(_rollbackIds.AsSpan(0, sampleIds.Length));
        foreach (long id in sampleIds) Committed(_samples[id]);
    }

    private Sample Known(long sampleId) =>
        _samples.TryGetValue(sampleId, out var found) ? found : throw new InvalidOperationException($"sample {sampleId} has nothing to roll back");

    private Sample CheckedKeep(long sampleId, ReadOnlySpan<int> keep)
    {
        var s = _samples.TryGetValue(sampleId, out var found) ? found : throw new InvalidOperationException($"sample {sampleId} has nothing to commit");
        for (int i = 0; i < keep.Length; i++)
        {
            int node = keep[i];
            if ((uint)node >= (uint)s.Parents.Count)
                throw new ArgumentOutOfRangeException(nameof(keep), $"keep[{i}] = {node}: sample {sampleId} has {s.Parents.Count} tentative tokens");
            int expected = i == 0 ? -1 : keep[i - 1];
            if (s.Parents[node] != expected)
                throw new ArgumentException($"keep: token {node}'s parent is {s.Parents[node]}, not {expected}: kept tokens must be a root-to-leaf path", nameof(keep));
        }
        return s;
    }

    private static void Committed(Sample s)
    {
        s.Parents.Clear();
        s.Depths.Clear();
        s.Chain = true;
    }

    public void Release(long sampleId)
    {
        if (!_samples.Remove(sampleId, out var s)) return;
        Cache.Release(s.CacheId);
    }

    public long KvBytes(long sampleId) =>
        _samples.TryGetValue(sampleId, out var s) ? (long)Cache.BlockTable(s.CacheId).Count * Cache.Layout.BlockWords * sizeof(uint) * 2 * Cache.NumLayers : 0;

    /// <summary>
    /// Copies the sample's committed KV blocks into <paramref name="target"/>'s cache (<see cref="KvCache.TryCopySampleTo"/>:
    /// kv_move on one backend, staged through host memory across backends). The target must be a transformer whose
    /// cache blocks have the same shape; its forwards then continue the sample as if it had been prefilled there.
    /// </summary>
    public bool TryCopySampleTo(long sampleId, ITargetModel target, long targetId)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target is not TransformerModel other || !other.Cache.Config.SameBlockShape(Cache.Config)) return false;
        var s = _samples.TryGetValue(sampleId, out var found) ? found : throw new ArgumentException($"sample {sampleId} is not in this model", nameof(sampleId));
        if (s.Parents.Count != 0 || Cache.PendingLength(s.CacheId) != 0 || Cache.RejectedLength(s.CacheId) != 0)
            throw new InvalidOperationException($"sample {sampleId} has uncommitted tokens or reservations: only committed KV can be copied");
        if (other._samples.ContainsKey(targetId)) throw new ArgumentException($"targetId: sample {targetId} is already in the target model", nameof(targetId));
        int cacheId = other._nextCacheId;
        if (!Cache.TryCopySampleTo(s.CacheId, other.Cache, cacheId)) return false;
        other._nextCacheId++;
        other._samples[targetId] = new Sample { CacheId = cacheId };
        return true;
    }

    /// <summary>
    /// A snapshot of the sample's committed blocks for a copy into <paramref name="target"/> that may overlap this
    /// model's forwards: when the target's cache is on another backend (a donor's reads are serialised with its own
    /// operations per device), or on the same one if that backend runs calls from several threads concurrently
    /// (<see cref="BackendCapabilities.ConcurrentKernels"/>: kv_move and reads free of shared state); null when both
    /// share a backend that serialises its operations (one Vulkan device): the copy would only take turns.
    /// </summary>
    public IKvSnapshot? Snapshot(long sampleId, ITargetModel target)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target is not TransformerModel other || ReferenceEquals(other, this) || !other.Cache.Config.SameBlockShape(Cache.Config)) return null;
        // A donor's backend serialises or isolates its operations, so a receiver on another backend may read the
        // frozen blocks between the donor's operations; one backend shared by both overlaps only if it runs calls
        // from several threads concurrently, else the receiver's kernels would take turns with the donor's.
        if (ReferenceEquals(Cache.Backend, other.Cache.Backend) && !Cache.Backend.Capabilities.ConcurrentKernels) return null;
        var s = _samples.TryGetValue(sampleId, out var found) ? found : throw new ArgumentException($"sample {sampleId} is not in this model", nameof(sampleId));
        if (s.Parents.Count != 0 || Cache.PendingLength(s.CacheId) != 0 || Cache.RejectedLength(s.CacheId) != 0)
            throw new InvalidOperationException($"sample {sampleId} has uncommitted tokens or reservations: only committed KV can be copied");
        return new KvSnapshot(Cache.Snapshot(s.CacheId), other, KvBytes(sampleId));
    }

    private sealed class KvSnapshot(KvCacheSnapshot blocks, TransformerModel target, long bytes) : IKvSnapshot
    {
        public long Bytes => bytes;

        public bool TryCopyTo(ITargetModel to, long targetId)
        {
            if (!ReferenceEquals(to, target)) throw new ArgumentException("target: the snapshot was taken for another model", nameof(to));
            if (target._samples.ContainsKey(targetId)) throw new ArgumentException($"targetId: sample {targetId} is already in the target model", nameof(targetId));
            int cacheId = target._nextCacheId;
            if (!blocks.Source.TryCopySnapshotTo(blocks, target.Cache, cacheId)) return false;
            target._nextCacheId++;
            target._samples[targetId] = new Sample { CacheId = cacheId };
            return true;
        }
    }

    private static void Grow<T>(ref T[] array, long needed)
    {
        if (needed > Array.MaxLength) throw new ArgumentException($"batch: {needed} elements exceed one host array");
        if (array.Length < needed) array = new T[DenseActivations.Capacity(needed)];
    }

    private void EnsureDevice(int tokens, int qw, int kvw)
    {
        if (_qDevice is not null && _qDevice.Length >= (long)tokens * qw) return;
        int capacity = DenseActivations.Capacity(tokens);
        _qDevice?.Dispose(); _kDevice?.Dispose(); _vDevice?.Dispose(); _oDevice?.Dispose();
        _qDevice = Backend.Allocate<float>((long)capacity * qw, "transformer.q");
        _kDevice = Backend.Allocate<float>((long)capacity * kvw, "transformer.k");
        _vDevice = Backend.Allocate<float>((long)capacity * kvw, "transformer.v");
        _oDevice = Backend.Allocate<float>((long)capacity * qw, "transformer.attended");
    }

    public void Dispose()
    {
        _dense.Dispose();
        _qDevice?.Dispose(); _kDevice?.Dispose(); _vDevice?.Dispose(); _oDevice?.Dispose();
        Cache.Dispose();
        if (_ownsWeights) Weights.Dispose();
    }
}
