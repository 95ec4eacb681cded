using Silk.NET.Vulkan;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// Descriptor sets for the dispatches of one submit: handed out from pools of <see cref="SetsPerPool"/> sets,
/// a new pool added when all are in use, every pool reset (not freed) after the submit completes. Not
/// thread-safe: the device calls it under its lock.
/// </summary>
internal sealed unsafe class DescriptorAllocator(Vk vk, Device device) : IDisposable
{
    /// <summary>Sets per pool.</summary>
    public const int SetsPerPool = 512;

    /// <summary>Storage-buffer descriptors per set a pool provides for (the most bindings a shader may declare).</summary>
    public const int MaxBindings = 16;

    private readonly List<DescriptorPool> _pools = new();
    private int _poolIndex, _setsInPool;

    /// <summary>A fresh set of <paramref name="layout"/>, valid until <see cref="Reset"/>.</summary>
    public DescriptorSet Allocate(DescriptorSetLayout layout)
    {
        if (_poolIndex == _pools.Count || _setsInPool == SetsPerPool)
        {
            if (_poolIndex < _pools.Count && _setsInPool == SetsPerPool) _poolIndex++;
            if (_poolIndex == _pools.Count) _pools.Add(CreatePool());
            _setsInPool = 0;
        }
        var alloc = new DescriptorSetAllocateInfo { SType = StructureType.DescriptorSetAllocateInfo, DescriptorPool = _pools[_poolIndex], DescriptorSetCount = 1, PSetLayouts = &layout };
        vk.AllocateDescriptorSets(device, &alloc, out var set).Check("vkAllocateDescriptorSets");
        _setsInPool++;
        return set;
    }

    private DescriptorPool CreatePool()
    {
        var size = new DescriptorPoolSize(DescriptorType.StorageBuffer, SetsPerPool * MaxBindings);
        var info = new DescriptorPoolCreateInfo { SType = StructureType.DescriptorPoolCreateInfo, MaxSets = SetsPerPool, PoolSizeCount = 1, PPoolSizes = &size };
        vk.CreateDescriptorPool(device, &info, null, out var pool).Check("vkCreateDescriptorPool");
        return pool;
    }

    /// <summary>Returns every set to its pool (after the submit that used them has completed).</summary>
    public void Reset()
    {
        foreach (var pool in _pools) vk.ResetDescriptorPool(device, pool, 0).Check("vkResetDescriptorPool");
        _poolIndex = 0;
        _setsInPool = 0;
    }

    public void Dispose()
    {
        foreach (var p in _pools) vk.DestroyDescriptorPool(device, p, null);
        _pools.Clear();
    }
}
