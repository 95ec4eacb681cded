namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>Element type the KV cache stores. Attention always computes in fp32.</summary>
public enum KvDType { F32 = 0, F16 = 1 }

/// <summary>
/// Layout of one layer's K (or V) cache: paged blocks of <see cref="BlockSize"/> token slots,
/// // [NumBlocks, BlockSize, NumKvHeads, HeadDim] elements, stored as 32-bit words (one fp32 or two fp16 per word).
/// Slot index = block * BlockSize + offset in block.
/// </summary>
public readonly record struct KvLayout(int NumBlocks, int BlockSize, int NumKvHeads, int HeadDim, KvDType DType)
{
    /// <summary>Elements in one token slot (all KV heads).</summary>
    public int RowElements => NumKvHeads * HeadDim;
    /// <summary>32-bit words in one token slot.</summary>
    public int RowWords => DType == KvDType.F16 ? RowElements / 2 : RowElements;
    public int BlockWords => RowWords * BlockSize;
    public long TotalWords => (long)BlockWords * NumBlocks;
    public long NumSlots => (long)NumBlocks * BlockSize;

    public void Validate()
    {
        if (NumBlocks <= 0 || BlockSize <= 0 || NumKvHeads <= 0 || HeadDim <= 0)
            throw new ArgumentException($"KV layout {this}: every size must be positive");
        if (DType == KvDType.F16 && HeadDim % 2 != 0)
            throw new ArgumentException($"KV layout {this}: fp16 storage needs an even head dimension");
    }
}
