using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

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
/// Tentative tokens (fed since a sample's last <see cref="Commit"/>) usually come in one forward (a prompt, a
/// decode token, a draft tree). They may also come in several forwards — a draft model drafting token by token —
/// as long as the earlier ones form a chain that the later ones descend from; anything else is rejected with a
/// clear error rather than computed with the wrong mask. Not thread-safe: one generation instance owns a model.
/// </remarks>
public sealed class TransformerModel : ITargetModel, IMigratableModel, IDisposable
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
    private readonly OnnxSession _pre, _postPre, _post, _head;
    // Run inputs with the weights bound once: layer 0's pre-attention graph, then per layer l its post-attention
    // graph (fused with layer l + 1's pre-attention one below the last layer). Activations are set per forward.
    private readonly Dictionary<string, OrtValue> _firstInputs;
    private readonly Dictionary<string, OrtValue>[] _layerInputs;
    private readonly Dictionary<string, OrtValue> _headWeights;
    private readonly string _headWeight;
    private int _nextCacheId;

    // Host scratch (pinned: ONNX Runtime reads and writes it in place) and engine scratch, grown on demand.
    private float[] _x = [], _y = [], _q = [], _k = [], _v = [], _attended = [], _rows = [], _logits = [];
    private long[] _positions = [];
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
        // Short runs interleaved with engine kernels on the same cores: no busy-waiting ONNX Runtime workers.
        var session = Options.Session with { AllowSpinning = false };
        try
        {
            _pre = new OnnxSession(DenseGraphs.Pre(spec, ElementType.Float), session);
            _postPre = new OnnxSession(DenseGraphs.PostPre(spec, ElementType.Float), session);
            _post = new OnnxSession(DenseGraphs.Post(spec, ElementType.Float), session);
            _headWeight = spec.TiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
            _head = new OnnxSession(DenseGraphs.Head(spec, ElementType.Float, _headWeight), session);
        }
        catch
        {
            Cache.Dispose();
            throw;
        }
        var arena = weights.Arena;
        Dictionary<string, OrtValue> Pre(int l) => DenseGraphs.PreWeights(spec).ToDictionary(n => DenseGraphs.PrePrefix + n, n => arena.Value($"model.layers.{l}.{n}"));
        Dictionary<string, OrtValue> Post(int l) => DenseGraphs.PostWeights(spec).ToDictionary(n => DenseGraphs.PostPrefix + n, n => arena.Value($"model.layers.{l}.{n}"));
        _firstInputs = Pre(0);
        _layerInputs = new Dictionary<string, OrtValue>[spec.NumLayers];
        for (int l = 0; l < spec.NumLayers; l++)
        {
            _layerInputs[l] = Post(l);
            if (l + 1 < spec.NumLayers)
                foreach (var (name, value) in Pre(l + 1)) _layerInputs[l][name] = value;
        }
        _headWeights = new Dictionary<string, OrtValue> { [DenseGraphs.FinalNorm] = arena.Value(DenseGraphs.FinalNorm), [_headWeight] = arena.Value(_headWeight) };
    }

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
        int pending = Cache.PendingLength(s.CacheId), wanted = s.Parents.Count + newTokens;
        if (wanted <= pending) return true;
        return pending == 0 ? Cache.TryReserve(s.CacheId, wanted) : Cache.TryExtend(s.CacheId, wanted - pending);
    }

    public void Forward(in ForwardBatch batch, DeviceBuffer<float> logits)
    {
        ArgumentNullException.ThrowIfNull(logits);
        var spec = Weights.Spec;
        int samples = batch.NumSamples, tokens = batch.NumTokens, rows = batch.LogitRows.Length, vocab = spec.VocabSize;
        if (batch.TokenOffsets.Length != samples + 1 || (samples > 0 && batch.TokenOffsets[0] != 0))
            throw new ArgumentException($"batch: {batch.TokenOffsets.Length} token offsets for {samples} samples (need {samples + 1}, starting at 0)", nameof(batch));
        if (batch.Tokens.Length != tokens || batch.Parents.Length != tokens)
            throw new ArgumentException($"batch: {batch.Tokens.Length} tokens and {batch.Parents.Length} parents for offsets ending at {tokens}", nameof(batch));
        if (logits.Length < (long)rows * vocab)
            throw new ArgumentException($"logits: {logits.Length} elements, {rows} rows of {vocab} need {(long)rows * vocab}", nameof(logits));
        for (int r = 0; r < rows; r++)
            if ((uint)batch.LogitRows[r] >= (uint)tokens)
                throw new ArgumentOutOfRangeException(nameof(batch), $"LogitRows[{r}] = {batch.LogitRows[r]} is outside [0, {tokens})");
        if (tokens == 0) return;

        // ---- plan: positions, slots, attention metadata; checked in full before any state changes ----
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Timings.Forwards++;
        Timings.Tokens += tokens;
        var entries = new Sample[samples];
        var cacheIds = new int[samples];
        var contextLens = new int[samples];
        bool causal = true;
        int maxNew = 0;
        EnsureHost(tokens, rows);
        var slots = new int[tokens];
        for (int b = 0; b < samples; b++)
        {
            long id = batch.SampleIds[b];
            var s = _samples.TryGetValue(id, out var found) ? found : throw new InvalidOperationException($"sample {id} is fed without a reservation (call TryReserve first)");
            for (int c = 0; c < b; c++)
                if (batch.SampleIds[c] == id) throw new ArgumentException($"batch: sample {id} appears twice", nameof(batch));
            entries[b] = s;
            cacheIds[b] = s.CacheId;
            int first = batch.TokenOffsets[b], n = batch.TokenOffsets[b + 1] - first, prior = s.Parents.Count;
            if (n < 0) throw new ArgumentException($"batch: token offsets decrease at sample {b}", nameof(batch));
            int committed = Cache.ContextLength(s.CacheId);
            if (prior + n > Cache.PendingLength(s.CacheId))
                throw new InvalidOperationException($"sample {id}: {prior + n} tentative tokens exceed its reservation of {Cache.PendingLength(s.CacheId)}");
            contextLens[b] = committed + prior;
            maxNew = Math.Max(maxNew, n);
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
                _positions[t] = position;
                slots[t] = Cache.Slot(s.CacheId, committed + prior + j);
                if (parent != prior + j - 1) causal = false;
            }
        }

        uint[] mask = [];
        int maskWords = 0;
        if (!causal)
        {
            maskWords = Math.Max(1, (maxNew + 31) / 32);
            mask = new uint[(long)tokens * maskWords];
            for (int b = 0; b < samples; b++)
            {
                int first = batch.TokenOffsets[b], n = batch.TokenOffsets[b + 1] - first, prior = entries[b].Parents.Count;
                for (int j = 0; j < n; j++)
                    for (int a = j; a >= 0; a = batch.Parents[first + a] - prior)
                        mask[(long)(first + j) * maskWords + a / 32] |= 1u << (a % 32);
            }
        }

        int maxBlocks = Cache.MaxBlocksPerSample(cacheIds);
        var blockTables = new int[(long)samples * maxBlocks];
        var committedLens = new int[samples];
        Cache.FillBlockTables(cacheIds, maxBlocks, blockTables, committedLens);

        Timings.PlanSeconds += clock.Elapsed.TotalSeconds;
        // ---- run ----
        int h = spec.HiddenSize, qw = spec.NumHeads * spec.HeadDim, kvw = spec.NumKvHeads * spec.HeadDim;
        EnsureDevice(tokens, qw, kvw);
        var embed = Weights.Arena.Span("model.embed_tokens.weight");
        for (int t = 0; t < tokens; t++) embed.Slice(batch.Tokens[t] * h, h).CopyTo(_x.AsSpan(t * h, h));

        var attention = new AttentionBatch
        {
            QueryOffsets = batch.TokenOffsets,
            ContextLens = contextLens,
            BlockTables = blockTables,
            MaxBlocksPerSample = maxBlocks,
            TreeMask = mask,
            MaskWords = maskWords,
            NumHeads = spec.NumHeads,
            Scale = 1f / MathF.Sqrt(spec.HeadDim),
        };
        using var positions = OrtTensors.Over(_positions.AsMemory(0, tokens), tokens);
        // Layer 0's dense part before attention; every later layer's comes fused with the previous layer's part after it.
        using (var x = OrtTensors.Over(_x.AsMemory(0, tokens * h), tokens, h))
        using (var q = OrtTensors.Over(_q.AsMemory(0, tokens * qw), tokens, qw))
        using (var k = OrtTensors.Over(_k.AsMemory(0, tokens * kvw), tokens, kvw))
        using (var v = OrtTensors.Over(_v.AsMemory(0, tokens * kvw), tokens, kvw))
        {
            var inputs = _firstInputs;
            inputs[DenseGraphs.X] = x;
            inputs[DenseGraphs.Positions] = positions;
            clock.Restart();
            _pre.Run(inputs, new Dictionary<string, OrtValue> { [DenseGraphs.Q] = q, [DenseGraphs.K] = k, [DenseGraphs.V] = v });
            Timings.DensePreSeconds += clock.Elapsed.TotalSeconds;
        }
        for (int l = 0; l < spec.NumLayers; l++)
        {
            clock.Restart();
            _kDevice!.Write(_k.AsSpan(0, tokens * kvw));
            _vDevice!.Write(_v.AsSpan(0, tokens * kvw));
            _qDevice!.Write(_q.AsSpan(0, tokens * qw));
            Cache.Append(l, _kDevice, _vDevice, slots);
            Timings.KvWriteSeconds += clock.Elapsed.TotalSeconds;
            clock.Restart();
            Backend.Attention(attention, _qDevice, Cache.Keys(l), Cache.Values(l), Cache.Layout, _oDevice!);
            _oDevice!.Read(_attended.AsSpan(0, tokens * qw));
            Timings.AttentionSeconds += clock.Elapsed.TotalSeconds;
            using (var x = OrtTensors.Over(_x.AsMemory(0, tokens * h), tokens, h))
            using (var a = OrtTensors.Over(_attended.AsMemory(0, tokens * qw), tokens, qw))
            using (var y = OrtTensors.Over(_y.AsMemory(0, tokens * h), tokens, h))
            using (var q = OrtTensors.Over(_q.AsMemory(0, tokens * qw), tokens, qw))
            using (var k = OrtTensors.Over(_k.AsMemory(0, tokens * kvw), tokens, kvw))
            using (var v = OrtTensors.Over(_v.AsMemory(0, tokens * kvw), tokens, kvw))
            {
                var inputs = _layerInputs[l];
                inputs[DenseGraphs.X] = x;
                inputs[DenseGraphs.Attended] = a;
                clock.Restart();
                if (l + 1 < spec.NumLayers)
                {
                    inputs[DenseGraphs.Positions] = positions;
                    _postPre.Run(inputs, new Dictionary<string, OrtValue> { [DenseGraphs.Y] = y, [DenseGraphs.Q] = q, [DenseGraphs.K] = k, [DenseGraphs.V] = v });
                }
                else _post.Run(inputs, new Dictionary<string, OrtValue> { [DenseGraphs.Y] = y });
                Timings.DensePostSeconds += clock.Elapsed.TotalSeconds;
            }
            (_x, _y) = (_y, _x);
        }

        // Commit the plan to the samples' state only now that every kernel ran.
        for (int b = 0; b < samples; b++)
        {
            var s = entries[b];
            int first = batch.TokenOffsets[b], n = batch.TokenOffsets[b + 1] - first, prior = s.Parents.Count;
            for (int j = 0; j < n; j++)
            {
                int parent = batch.Parents[first + j];
                s.Depths.Add(parent < 0 ? 1 : s.Depths[parent] + 1);
                s.Parents.Add(parent);
                if (parent != prior + j - 1) s.Chain = false;
            }
        }

        if (rows == 0) return;
        for (int r = 0; r < rows; r++) _x.AsSpan(batch.LogitRows[r] * h, h).CopyTo(_rows.AsSpan(r * h, h));
        using (var x = OrtTensors.Over(_rows.AsMemory(0, rows * h), rows, h))
        using (var output = OrtTensors.Over(_logits.AsMemory(0, rows * vocab), rows, vocab))
        {
            var inputs = new Dictionary<string, OrtValue>(_headWeights) { [DenseGraphs.X] = x };
            clock.Restart();
            _head.Run(inputs, new Dictionary<string, OrtValue> { [DenseGraphs.Logits] = output });
        }
        logits.Write(_logits.AsSpan(0, rows * vocab));
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
        Cache.Commit(s.CacheId, keep);
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
        if (s.Parents.Count != 0 || Cache.PendingLength(s.CacheId) != 0)
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
    /// model's forwards: when both caches live in host memory (CPU backends, whose kv_move and reads are free of
    /// shared state), or when the target is on another backend (a Vulkan donor's reads are serialised with its own
    /// operations per device); null when both share one GPU backend.
    /// </summary>
    public IKvSnapshot? Snapshot(long sampleId, ITargetModel target)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (target is not TransformerModel other || ReferenceEquals(other, this) || !other.Cache.Config.SameBlockShape(Cache.Config)) return null;
        // Host-memory caches copy with no shared state. A Vulkan donor serialises its device per operation
        // (VulkanDevice.Sync), so a receiver on another backend may read the frozen blocks between the donor's
        // operations; one backend shared by both would have the receiver run kernels on the donor's backend: not overlapped.
        bool hostCaches = Cache.Backend.Info.Kind == DeviceKind.Cpu && other.Cache.Backend.Info.Kind == DeviceKind.Cpu;
        if (!hostCaches && ReferenceEquals(Cache.Backend, other.Cache.Backend)) return null;
        var s = _samples.TryGetValue(sampleId, out var found) ? found : throw new ArgumentException($"sample {sampleId} is not in this model", nameof(sampleId));
        if (s.Parents.Count != 0 || Cache.PendingLength(s.CacheId) != 0)
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

    private void EnsureHost(int tokens, int rows)
    {
        var spec = Weights.Spec;
        int h = spec.HiddenSize, qw = spec.NumHeads * spec.HeadDim, kvw = spec.NumKvHeads * spec.HeadDim;
        Grow(ref _x, (long)tokens * h);
        Grow(ref _y, (long)tokens * h);
        Grow(ref _q, (long)tokens * qw);
        Grow(ref _attended, (long)tokens * qw);
        Grow(ref _k, (long)tokens * kvw);
        Grow(ref _v, (long)tokens * kvw);
        Grow(ref _rows, (long)rows * h);
        Grow(ref _logits, (long)rows * spec.VocabSize);
        if (_positions.Length < tokens) _positions = GC.AllocateArray<long>(Capacity(tokens), pinned: true);
    }

    private static int Capacity(long needed) => (int)Math.Min((ulong)Array.MaxLength, Math.Max(64UL, System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)needed)));

    private static void Grow(ref float[] array, long needed)
    {
        if (needed > Array.MaxLength) throw new ArgumentException($"batch: {needed} elements exceed one host array");
        if (array.Length < needed) array = GC.AllocateArray<float>(Capacity(needed), pinned: true);
    }

    private void EnsureDevice(int tokens, int qw, int kvw)
    {
        if (_qDevice is not null && _qDevice.Length >= (long)tokens * qw) return;
        int capacity = Capacity(tokens);
        _qDevice?.Dispose(); _kDevice?.Dispose(); _vDevice?.Dispose(); _oDevice?.Dispose();
        _qDevice = Backend.Allocate<float>((long)capacity * qw, "transformer.q");
        _kDevice = Backend.Allocate<float>((long)capacity * kvw, "transformer.k");
        _vDevice = Backend.Allocate<float>((long)capacity * kvw, "transformer.v");
        _oDevice = Backend.Allocate<float>((long)capacity * qw, "transformer.attended");
    }

    public void Dispose()
    {
        _pre.Dispose();
        _postPre.Dispose();
        _post.Dispose();
        _head.Dispose();
        _qDevice?.Dispose(); _kDevice?.Dispose(); _vDevice?.Dispose(); _oDevice?.Dispose();
        Cache.Dispose();
        if (_ownsWeights) Weights.Dispose();
    }
}
