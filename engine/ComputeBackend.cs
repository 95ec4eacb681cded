using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine;

/// <summary>
/// The engine contract: buffers and the kernels (verify, attention, kv_move, sample, top tokens), with identical
/// semantics on every backend. Arguments are validated here, once, before a backend sees them; bad input
/// raises an <see cref="ArgumentException"/> naming the argument. Kernels that return results to the host
/// (verify, sample, top tokens) wait for all recorded work; the others (attention, kv_move) are recorded and run at the
/// next <see cref="Flush"/>, buffer read or buffer write.
/// </summary>
public abstract class ComputeBackend : IDisposable
{
    public abstract DeviceInfo Info { get; }

    /// <summary>What this backend can do (host-addressable buffers, concurrent use from several threads).</summary>
    public abstract BackendCapabilities Capabilities { get; }

    /// <summary>Allocates a zeroed buffer of <paramref name="length"/> elements.</summary>
    public abstract DeviceBuffer<T> Allocate<T>(long length, string name) where T : unmanaged;

    /// <summary>
    /// A scratch buffer kept across calls: <paramref name="buffer"/> as it is when it holds <paramref name="length"/>
    /// elements, else replaced by a new one of that length (grown, never shrunk; the old one disposed).
    /// </summary>
    public DeviceBuffer<T> Reuse<T>(ref DeviceBuffer<T>? buffer, long length, string name) where T : unmanaged
    {
        if (buffer is null || buffer.Length < length)
        {
            buffer?.Dispose();
            buffer = Allocate<T>(Math.Max(length, 1), name);
        }
        return buffer;
    }

    /// <summary>Submits recorded work and waits for it.</summary>
    public abstract void Flush();

    /// <summary>Batched speculative verification of draft trees (lossless). See <see cref="VerifyBatch"/>.</summary>
    /// <param name="targetLogits">// [batch.TotalRows, VocabSize] target logits, one row per root and node.</param>
    /// <param name="draftLogits">// [batch.TotalRows, VocabSize] draft logits (rows of samples whose kind is
    /// <see cref="DraftKind.Sampled"/>); null when no sample has q.</param>
    public void Verify(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs)
    {
        KernelValidation.Verify(batch, targetLogits, draftLogits, outputs);
        if (batch.NumSamples == 0) return;
        VerifyCore(batch, targetLogits, draftLogits, outputs);
    }

    /// <summary>Batched temperature / top-k / top-p sampling (argmax when greedy) with per-row seeds.</summary>
    /// <param name="rows">[R] settings per row.</param>
    /// <param name="logits">// [R, vocabSize] (rows beyond R are ignored).</param>
    /// <param name="tokens">[R] sampled token.</param>
    /// <param name="logProbs">[R] log_softmax(logits / T)[token] (T = 1 when greedy): the policy's log-prob.</param>
    public void Sample(ReadOnlySpan<SamplingParams> rows, DeviceBuffer<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs)
    {
        KernelValidation.Sample(rows, logits, vocabSize, tokens, logProbs);
        if (rows.Length == 0) return;
        SampleCore(rows, logits, vocabSize, tokens, logProbs);
    }

    /// <summary>
    /// The <paramref name="count"/> most probable tokens of requested logits rows under their warped distributions,
    /// with their probabilities, exactly as <see cref="Reference.ReferenceTopTokens"/>: what a draft tree expands, so a
    /// speculative step reads back count pairs per row instead of whole vocabulary rows. Waits for recorded work.
    /// </summary>
    /// <param name="settings">[R] the warp of each requested row (temperature 0 ranks by the softmax of the raw logits).</param>
    /// <param name="logits">// [*, vocabSize]</param>
    /// <param name="rows">[R] the row of <paramref name="logits"/> each request reads (any order).</param>
    /// <param name="tokens">// [R, count] most probable first, lowest token on ties; −1 past the row's tokens of probability > 0.</param>
    /// <param name="probabilities">// [R, count] their probabilities (0 where the token is −1). Double: the CPU backend
    /// computes them in double bit for bit as the reference, so draft trees stay those of the host path.</param>
    public void TopTokens(ReadOnlySpan<SamplingParams> settings, DeviceBuffer<float> logits, ReadOnlySpan<int> rows, int vocabSize, int count, Span<int> tokens, Span<double> probabilities)
    {
        KernelValidation.TopTokens(settings, logits, rows, vocabSize, count, tokens, probabilities);
        if (rows.Length == 0) return;
        TopTokensCore(settings, logits, rows, vocabSize, count, tokens, probabilities);
    }

    /// <summary>Paged attention with causal or tree masks and grouped-query heads. Recorded, not waited for.</summary>
    /// <param name="query">// [numTokens, NumHeads, HeadDim]</param>
    /// <param name="keyCache">// [NumBlocks, BlockSize, NumKvHeads, HeadDim] as words (see <see cref="KvLayout"/>)</param>
    /// <param name="valueCache">same layout as <paramref name="keyCache"/></param>
    /// <param name="output">// [numTokens, NumHeads, HeadDim]</param>
    public void Attention(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output)
    {
        KernelValidation.Attention(batch, query, keyCache, valueCache, layout, output);
        if (batch.NumTokens == 0) return;
        AttentionCore(batch, query, keyCache, valueCache, layout, output);
    }

    /// <summary>Writes new K or V rows into cache slots (fp32 → fp32 or fp16). Recorded, not waited for.
    /// fp16 rounds to nearest even exactly as <c>(Half)float</c>; values are not scanned for NaN/Inf (stored as given).</summary>
    /// <param name="source">// [slots.Length, layout.RowElements] fp32</param>
    /// <param name="cache">// one layer's K or V cache</param>
    /// <param name="slots">[T] destination slot (block * BlockSize + offset) of each row, all distinct.</param>
    public void AppendKv(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots)
    {
        KernelValidation.AppendKv(source, cache, layout, slots);
        if (slots.Length == 0) return;
        AppendKvCore(source, cache, layout, slots);
    }

    /// <summary>
    /// Copies rows of <paramref name="rowWords"/> words from <paramref name="source"/> to <paramref name="destination"/>
    /// (the same buffer or another of this backend). Pairs are grouped in segments [segmentOffsets[g], segmentOffsets[g+1]);
    /// segments run in parallel, pairs within a segment in order, so in-place compaction (each destination at or below
    /// its source) is safe. Segments must be independent: a row one segment writes is neither written nor (same
    /// buffer) read by another. Rows are slots (rowWords = layout.RowWords) or whole blocks (layout.BlockWords).
    /// Recorded, not waited for.
    /// </summary>
    public void CopyKv(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords)
    {
        KernelValidation.CopyKv(source, destination, sourceRows, destinationRows, segmentOffsets, rowWords);
        if (sourceRows.Length == 0) return;
        CopyKvCore(source, destination, sourceRows, destinationRows, segmentOffsets, rowWords);
    }

    /// <summary>
    /// Copies rows of <paramref name="rowElements"/> floats from <paramref name="source"/> to another buffer
    /// <paramref name="destination"/> of this backend: row <paramref name="sourceRows"/>[p] to row
    /// <paramref name="destinationRows"/>[p] (distinct). Moves logits rows on the device (a draft model's q into the
    /// verification's layout) without a host round trip. Recorded, not waited for.
    /// </summary>
    public void CopyRows(DeviceBuffer<float> source, DeviceBuffer<float> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, int rowElements)
    {
        KernelValidation.CopyRows(source, destination, sourceRows, destinationRows, rowElements);
        if (sourceRows.Length == 0) return;
        CopyRowsCore(source, destination, sourceRows, destinationRows, rowElements);
    }

    protected abstract void VerifyCore(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs);
    protected abstract void SampleCore(ReadOnlySpan<SamplingParams> rows, DeviceBuffer<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs);
    protected abstract void TopTokensCore(ReadOnlySpan<SamplingParams> settings, DeviceBuffer<float> logits, ReadOnlySpan<int> rows, int vocabSize, int count, Span<int> tokens, Span<double> probabilities);
    protected abstract void AttentionCore(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output);
    protected abstract void AppendKvCore(DeviceBuffer<float> source, DeviceBuffer<uint> cache, KvLayout layout, ReadOnlySpan<int> slots);
    protected abstract void CopyRowsCore(DeviceBuffer<float> source, DeviceBuffer<float> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, int rowElements);
    protected abstract void CopyKvCore(DeviceBuffer<uint> source, DeviceBuffer<uint> destination, ReadOnlySpan<int> sourceRows, ReadOnlySpan<int> destinationRows, ReadOnlySpan<int> segmentOffsets, int rowWords);

    public abstract void Dispose();
}
