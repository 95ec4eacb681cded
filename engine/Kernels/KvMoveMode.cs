namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>What a kv_move dispatch copies.</summary>
public enum KvMoveMode
{
    /// <summary>Raw 32-bit words, row to row (compaction of accepted nodes, block copies, migration).</summary>
    Copy = 0,
    /// <summary>fp32 rows of new K/V into fp32 cache slots.</summary>
    AppendF32 = 1,
    /// <summary>fp32 rows of new K/V packed into fp16 cache slots.</summary>
    AppendF16 = 2,
}
