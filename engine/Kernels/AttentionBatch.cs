namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>
/// A flattened ragged batch of query tokens for paged attention over one layer's KV cache.
/// Sample s has query tokens [QueryOffsets[s], QueryOffsets[s+1]); its committed context is cache slots
/// 0 .. ContextLens[s]−1 (in its block table order) and its new tokens of this step have already been
/// appended at slots ContextLens[s] + j, j = 0 .. n_s − 1. A query token i sees the whole committed context
/// and, among the new tokens, j ≤ i (causal: prefill and decode) or the j whose bit is set in its tree-mask
/// row (verification: the node itself and its ancestors). RoPE positions (prefix length + depth) are the
/// dense part's business; attention needs only the mask.
/// </summary>
public readonly ref struct AttentionBatch
{
    /// <summary>[S + 1] cu_num_tokens.</summary>
    public ReadOnlySpan<int> QueryOffsets { get; init; }
    /// <summary>[S] committed tokens in the cache before this step.</summary>
    public ReadOnlySpan<int> ContextLens { get; init; }
    /// <summary>[S, MaxBlocksPerSample] physical block of each logical block; unused entries may be anything ≥ 0.</summary>
    public ReadOnlySpan<int> BlockTables { get; init; }
    public int MaxBlocksPerSample { get; init; }
    /// <summary>Empty = causal. Else [numTokens, MaskWords]: bit j of row t (word j / 32, bit j % 32) lets token t see its sample's new token j.</summary>
    public ReadOnlySpan<uint> TreeMask { get; init; }
    public int MaskWords { get; init; }
    public int NumHeads { get; init; }
    /// <summary>Score scale, usually 1/sqrt(headDim).</summary>
    public float Scale { get; init; }

    public int NumSamples => ContextLens.Length;
    public int NumTokens => QueryOffsets.Length == 0 ? 0 : QueryOffsets[^1];
}
