namespace RLHFSpec.Compute.Engine;

/// <summary>
/// Free list of the physical blocks of a paged KV cache. Allocation is all-or-nothing, so a request that does not
/// fit changes nothing (the caller preempts or waits). Blocks come out in ascending order from a fresh allocator,
/// which keeps runs deterministic. Not thread-safe: one instance (generation loop) owns it.
/// </summary>
public sealed class BlockAllocator
{
    private readonly int[] _free;      // stack of free block ids; the top is _free[_freeCount - 1]
    private readonly bool[] _allocated;
    private int _freeCount;

    public BlockAllocator(int numBlocks)
    {
        if (numBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "must be positive");
        _free = new int[numBlocks];
        _allocated = new bool[numBlocks];
        for (int i = 0; i < numBlocks; i++) _free[i] = numBlocks - 1 - i;
        _freeCount = numBlocks;
    }

    public int NumBlocks => _free.Length;
    public int FreeBlocks => _freeCount;
    public int UsedBlocks => NumBlocks - _freeCount;

    public bool IsAllocated(int block) => (uint)block < (uint)NumBlocks && _allocated[block];

    /// <summary>Fills <paramref name="blocks"/> with free blocks, or returns false and allocates none.</summary>
    public bool TryAllocate(Span<int> blocks)
    {
        if (blocks.Length > _freeCount) return false;
        for (int i = 0; i < blocks.Length; i++)
        {
            int block = _free[--_freeCount];
            _allocated[block] = true;
            blocks[i] = block;
        }
        return true;
    }

    /// <summary>Returns a block to the free list; freeing a block that is not allocated is a bug and throws.</summary>
    public void Free(int block)
    {
        if ((uint)block >= (uint)NumBlocks) throw new ArgumentOutOfRangeException(nameof(block), block, $"outside [0, {NumBlocks})");
        if (!_allocated[block]) throw new InvalidOperationException($"block {block} is freed twice");
        _allocated[block] = false;
        _free[_freeCount++] = block;
    }
}
