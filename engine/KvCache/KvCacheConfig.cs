using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine;

/// <summary>Shape of a paged KV cache; the number of blocks follows from <paramref name="MemoryBudgetBytes"/>.</summary>
/// <param name="NumLayers">Transformer layers; each has a K and a V buffer.</param>
/// <param name="BlockSize">Token slots per block.</param>
/// <param name="MemoryBudgetBytes">Bytes for all K and V buffers of all layers together.</param>
public sealed record KvCacheConfig(int NumLayers, int BlockSize, int NumKvHeads, int HeadDim, KvDType DType, long MemoryBudgetBytes)
{
    /// <summary>Layout of one layer's buffer with <paramref name="numBlocks"/> blocks.</summary>
    public KvLayout Layout(int numBlocks) => new(numBlocks, BlockSize, NumKvHeads, HeadDim, DType);

    /// <summary>Bytes one block takes over all layers, K and V.</summary>
    public long BytesPerBlock => 2L * NumLayers * Layout(1).BlockWords * sizeof(uint);

    /// <summary>Whether blocks of <paramref name="other"/> can be copied into this cache word for word.</summary>
    public bool SameBlockShape(KvCacheConfig other) =>
        NumLayers == other.NumLayers && BlockSize == other.BlockSize && NumKvHeads == other.NumKvHeads && HeadDim == other.HeadDim && DType == other.DType;

    internal void Validate(string argument)
    {
        if (NumLayers <= 0 || MemoryBudgetBytes <= 0 || !Enum.IsDefined(DType))
            throw new ArgumentException($"{argument}: {this}: layers and memory budget must be positive, the dtype known", argument);
        try { Layout(1).Validate(); }
        catch (ArgumentException e) { throw new ArgumentException($"{argument}: {e.Message}", argument, e); }
    }
}
