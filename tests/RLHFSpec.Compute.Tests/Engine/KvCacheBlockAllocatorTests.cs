using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Tests.Engine;

public class KvCacheBlockAllocatorTests
{
    [Test]
    public void AllocationIsAllOrNothingAndBlocksAreDistinct()
    {
        var allocator = new BlockAllocator(5);
        var first = new int[3];
        Assert.That(allocator.TryAllocate(first), Is.True);
        Assert.That(first, Is.EqualTo(new[] { 0, 1, 2 }), "a fresh allocator hands out ascending blocks");
        var tooMany = new[] { -1, -1, -1 };
        Assert.That(allocator.TryAllocate(tooMany), Is.False);
        Assert.That(tooMany, Is.All.EqualTo(-1));
        Assert.That(allocator.FreeBlocks, Is.EqualTo(2));
        allocator.Free(1);
        var next = new int[3];
        Assert.That(allocator.TryAllocate(next), Is.True);
        Assert.That(next.Concat(new[] { 0, 2 }).Distinct().Count(), Is.EqualTo(5));
        Assert.That(allocator.FreeBlocks, Is.EqualTo(0));
        Assert.That(Enumerable.Range(0, 5).All(allocator.IsAllocated), Is.True);
    }

    [Test]
    public void FreeingTwiceOrOutOfRangeThrows()
    {
        var allocator = new BlockAllocator(2);
        var one = new int[1];
        allocator.TryAllocate(one);
        allocator.Free(one[0]);
        Assert.Throws<InvalidOperationException>(() => allocator.Free(one[0]));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => allocator.Free(2))!.ParamName, Is.EqualTo("block"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new BlockAllocator(0))!.ParamName, Is.EqualTo("numBlocks"));
        Assert.That(allocator.FreeBlocks, Is.EqualTo(2));
    }
}
