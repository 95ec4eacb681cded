using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Silk.NET.Core.Native;
using Silk.NET.Vulkan;
using VkBuffer = Silk.NET.Vulkan.Buffer;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// One Vulkan device: owns the instance, the compute queue, memory allocation, the command buffer and its fence,
/// the <see cref="PipelineCache"/> and the <see cref="DescriptorAllocator"/>. Work is recorded into one command buffer (many dispatches per
/// submit) with barriers derived from each binding's declared access, and submitted by <see cref="Flush"/>.
/// </summary>
internal sealed unsafe class VulkanDevice : IDisposable
{
    private readonly Vk _vk;
    private readonly Instance _instance;
    private readonly PhysicalDevice _physical;
    private readonly Device _device;
    private readonly Queue _queue;
    private readonly uint _queueFamily;
    private readonly PhysicalDeviceMemoryProperties _memory;
    private readonly CommandPool _commandPool;
    private readonly CommandBuffer _commands;
    private readonly Fence _fence;
    private readonly PipelineCache _pipelines;
    private readonly DescriptorAllocator _descriptors;

    /// <summary>
    /// Serialises everything that records, submits or maps on this device (a Vulkan command buffer, descriptor pools
    /// and the queue need external synchronisation). One thread drives a device in generation; the lock lets another
    /// read a buffer meanwhile — a migration's KV copy overlapping the donor's steps — between the owner's operations.
    /// Re-entrant (a flush inside a locked read).
    /// </summary>
    internal object Sync { get; } = new();
    // Hazard tracking since the last barrier: buffer handle → what was done to it.
    private readonly Dictionary<ulong, BindingAccess> _pending = new();
    private bool _recording;
    private bool _disposed;

    public VulkanDevice(Vk vk, Instance instance, PhysicalDevice physical, int index)
    {
        _vk = vk;
        _instance = instance;
        _physical = physical;
        Info = Describe(vk, physical, index, out _queueFamily);
        vk.GetPhysicalDeviceMemoryProperties(physical, out _memory);

        float priority = 1f;
        var queueInfo = new DeviceQueueCreateInfo
        {
            SType = StructureType.DeviceQueueCreateInfo,
            QueueFamilyIndex = _queueFamily,
            QueueCount = 1,
            PQueuePriorities = &priority,
        };
        var deviceInfo = new DeviceCreateInfo
        {
            SType = StructureType.DeviceCreateInfo,
            QueueCreateInfoCount = 1,
            PQueueCreateInfos = &queueInfo,
        };
        vk.CreateDevice(physical, &deviceInfo, null, out _device).Check("vkCreateDevice");
        vk.GetDeviceQueue(_device, _queueFamily, 0, out _queue);

        var poolInfo = new CommandPoolCreateInfo
        {
            SType = StructureType.CommandPoolCreateInfo,
            QueueFamilyIndex = _queueFamily,
            Flags = CommandPoolCreateFlags.ResetCommandBufferBit,
        };
        vk.CreateCommandPool(_device, &poolInfo, null, out _commandPool).Check("vkCreateCommandPool");
        var allocInfo = new CommandBufferAllocateInfo
        {
            SType = StructureType.CommandBufferAllocateInfo,
            CommandPool = _commandPool,
            Level = CommandBufferLevel.Primary,
            CommandBufferCount = 1,
        };
        vk.AllocateCommandBuffers(_device, &allocInfo, out _commands).Check("vkAllocateCommandBuffers");
        var fenceInfo = new FenceCreateInfo { SType = StructureType.FenceCreateInfo };
        vk.CreateFence(_device, &fenceInfo, null, out _fence).Check("vkCreateFence");
        _pipelines = new PipelineCache(vk, _device);
        _descriptors = new DescriptorAllocator(vk, _device);
    }

    public DeviceInfo Info { get; }
    public DeviceLimits Limits => Info.Limits;

    /// <summary>Number of submits so far (for tests and benchmarks).</summary>
    public long Submits { get; private set; }

    /// <summary>Bytes copied from device buffers to the host by buffer reads so far (for tests: what a step reads back).</summary>
    public long BytesRead { get; internal set; }

    /// <summary>Barriers recorded so far (for tests: barriers follow from hazards, not from every dispatch).</summary>
    public long Barriers { get; private set; }

    internal static DeviceInfo Describe(Vk vk, PhysicalDevice physical, int index, out uint queueFamily)
    {
        var subgroup = new PhysicalDeviceSubgroupProperties { SType = StructureType.PhysicalDeviceSubgroupProperties };
        var props2 = new PhysicalDeviceProperties2 { SType = StructureType.PhysicalDeviceProperties2, PNext = &subgroup };
        vk.GetPhysicalDeviceProperties2(physical, &props2);
        var props = props2.Properties;
        string name = SilkMarshal.PtrToString((nint)props.DeviceName) ?? "unknown";
        var type = props.DeviceType switch
        {
            PhysicalDeviceType.DiscreteGpu => DeviceType.DiscreteGpu,
            PhysicalDeviceType.IntegratedGpu => DeviceType.IntegratedGpu,
            PhysicalDeviceType.VirtualGpu => DeviceType.VirtualGpu,
            PhysicalDeviceType.Cpu => DeviceType.Cpu,
            _ => DeviceType.Other,
        };
        uint api = props.ApiVersion;
        string driver = $"Vulkan {api >> 22}.{(api >> 12) & 0x3FF}.{api & 0xFFF}, driver 0x{props.DriverVersion:x}, vendor 0x{props.VendorID:x4}";

        uint familyCount = 0;
        vk.GetPhysicalDeviceQueueFamilyProperties(physical, &familyCount, null);
        var families = new QueueFamilyProperties[familyCount];
        fixed (QueueFamilyProperties* f = families) vk.GetPhysicalDeviceQueueFamilyProperties(physical, &familyCount, f);
        queueFamily = uint.MaxValue;
        for (uint i = 0; i < familyCount; i++)
        {
            // Prefer a compute queue without graphics (async compute) when there is one.
            bool compute = families[i].QueueFlags.HasFlag(QueueFlags.ComputeBit);
            if (!compute) continue;
            if (queueFamily == uint.MaxValue || !families[i].QueueFlags.HasFlag(QueueFlags.GraphicsBit)) queueFamily = i;
        }
        if (queueFamily == uint.MaxValue) throw new ComputeException($"Vulkan device {index} ({name}) has no compute queue");

        vk.GetPhysicalDeviceMemoryProperties(physical, out var memory);
        long largestHeap = 0;
        for (int i = 0; i < memory.MemoryHeapCount; i++)
            if (memory.MemoryHeaps[i].Flags.HasFlag(MemoryHeapFlags.DeviceLocalBit))
                largestHeap = Math.Max(largestHeap, (long)memory.MemoryHeaps[i].Size);

        var l = props.Limits;
        var limits = new DeviceLimits(
            SubgroupSize: (int)Math.Max(1, subgroup.SubgroupSize),
            MaxStorageBufferRange: l.MaxStorageBufferRange,
            MinStorageBufferOffsetAlignment: (long)Math.Max(4, l.MinStorageBufferOffsetAlignment),
            MaxSharedMemoryBytes: (int)l.MaxComputeSharedMemorySize,
            MaxWorkgroupInvocations: (int)l.MaxComputeWorkGroupInvocations,
            MaxWorkgroupCountX: (int)Math.Min(int.MaxValue, l.MaxComputeWorkGroupCount[0]),
            DeviceMemoryBytes: largestHeap);
        return new DeviceInfo($"vulkan:{index}", name, DeviceKind.Vulkan, type, driver, limits) { CooperativeMatrix = HasExtension(vk, physical, "VK_KHR_cooperative_matrix") };
    }

    /// <summary>Whether the device lists extension <paramref name="extension"/> (features are read from the device, never inferred from its vendor).</summary>
    private static bool HasExtension(Vk vk, PhysicalDevice physical, string extension)
    {
        uint count = 0;
        vk.EnumerateDeviceExtensionProperties(physical, (byte*)null, &count, null);
        if (count == 0) return false;
        var properties = new ExtensionProperties[count];
        fixed (ExtensionProperties* p = properties) vk.EnumerateDeviceExtensionProperties(physical, (byte*)null, &count, p);
        for (int i = 0; i < properties.Length; i++)
        {
            var property = properties[i];
            if (SilkMarshal.PtrToString((nint)property.ExtensionName) == extension) return true;
        }
        return false;
    }

    // ---- memory ----

    internal (VkBuffer, DeviceMemory, nint, bool) CreateBuffer(long sizeBytes, bool preferHostVisible, string name)
    {
        lock (Sync) return CreateBufferLocked(sizeBytes, preferHostVisible, name);
    }

    private (VkBuffer, DeviceMemory, nint, bool) CreateBufferLocked(long sizeBytes, bool preferHostVisible, string name)
    {
        ThrowIfDisposed();
        var info = new BufferCreateInfo
        {
            SType = StructureType.BufferCreateInfo,
            Size = (ulong)sizeBytes,
            Usage = BufferUsageFlags.StorageBufferBit | BufferUsageFlags.TransferSrcBit | BufferUsageFlags.TransferDstBit,
            SharingMode = SharingMode.Exclusive,
        };
        _vk.CreateBuffer(_device, &info, null, out var buffer).Check($"vkCreateBuffer('{name}', {sizeBytes} bytes)");
        _vk.GetBufferMemoryRequirements(_device, buffer, out var req);

        // Host-visible device-local first (unified memory, ReBAR, lavapipe), then what the caller prefers.
        var wanted = preferHostVisible
            ? new[] { MemoryPropertyFlags.DeviceLocalBit | MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit,
                      MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit | MemoryPropertyFlags.HostCachedBit,
                      MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit }
            : new[] { MemoryPropertyFlags.DeviceLocalBit | MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit,
                      MemoryPropertyFlags.DeviceLocalBit,
                      MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit };
        DeviceMemory memory = default;
        Result last = Result.ErrorOutOfDeviceMemory;
        MemoryPropertyFlags got = 0;
        foreach (var flags in wanted)
        {
            int type = FindMemoryType(req.MemoryTypeBits, flags);
            if (type < 0) continue;
            var alloc = new MemoryAllocateInfo { SType = StructureType.MemoryAllocateInfo, AllocationSize = req.Size, MemoryTypeIndex = (uint)type };
            last = _vk.AllocateMemory(_device, &alloc, null, out memory);
            if (last == Result.Success) { got = _memory.MemoryTypes[type].PropertyFlags; break; }
        }
        if (last != Result.Success)
        {
            _vk.DestroyBuffer(_device, buffer, null);
            throw new ComputeException($"Vulkan call vkAllocateMemory('{name}', {sizeBytes} bytes) failed: {last}");
        }
        _vk.BindBufferMemory(_device, buffer, memory, 0).Check($"vkBindBufferMemory('{name}')");
        byte* mapped = null;
        bool hostVisible = got.HasFlag(MemoryPropertyFlags.HostVisibleBit) && got.HasFlag(MemoryPropertyFlags.HostCoherentBit);
        if (hostVisible)
        {
            void* p;
            _vk.MapMemory(_device, memory, 0, Vk.WholeSize, 0, &p).Check($"vkMapMemory('{name}')");
            mapped = (byte*)p;
            NativeMemory.Clear(mapped, (nuint)sizeBytes);
        }
        return (buffer, memory, (nint)mapped, hostVisible);
    }

    private int FindMemoryType(uint typeBits, MemoryPropertyFlags flags)
    {
        for (int i = 0; i < _memory.MemoryTypeCount; i++)
            if ((typeBits & (1u << i)) != 0 && (_memory.MemoryTypes[i].PropertyFlags & flags) == flags)
                return i;
        return -1;
    }

    internal void DestroyBuffer(VkBuffer buffer, DeviceMemory memory, bool mapped)
    {
        lock (Sync) DestroyBufferLocked(buffer, memory, mapped);
    }

    private void DestroyBufferLocked(VkBuffer buffer, DeviceMemory memory, bool mapped)
    {
        if (_disposed) return;
        // A buffer may still be referenced by recorded work; finish it first.
        Flush();
        if (mapped) _vk.UnmapMemory(_device, memory);
        _vk.DestroyBuffer(_device, buffer, null);
        _vk.FreeMemory(_device, memory, null);
    }

    // ---- recording ----

    private void BeginIfNeeded()
    {
        ThrowIfDisposed();
        if (_recording) return;
        var begin = new CommandBufferBeginInfo { SType = StructureType.CommandBufferBeginInfo, Flags = CommandBufferUsageFlags.OneTimeSubmitBit };
        _vk.BeginCommandBuffer(_commands, &begin).Check("vkBeginCommandBuffer");
        _recording = true;
    }

    /// <summary>Records a barrier if any access conflicts with what was recorded since the last one.</summary>
    private void TrackHazards(ReadOnlySpan<(ulong Buffer, BindingAccess Access)> uses)
    {
        bool hazard = false;
        foreach (var (buffer, access) in uses)
        {
            if (!_pending.TryGetValue(buffer, out var before)) continue;
            bool readAfterWrite = access.HasFlag(BindingAccess.Read) && before.HasFlag(BindingAccess.Write);
            bool writeAfterAny = access.HasFlag(BindingAccess.Write);
            if (readAfterWrite || writeAfterAny) { hazard = true; break; }
        }
        if (hazard)
        {
            var barrier = new MemoryBarrier
            {
                SType = StructureType.MemoryBarrier,
                SrcAccessMask = AccessFlags.ShaderWriteBit | AccessFlags.TransferWriteBit | AccessFlags.ShaderReadBit | AccessFlags.TransferReadBit,
                DstAccessMask = AccessFlags.ShaderReadBit | AccessFlags.ShaderWriteBit | AccessFlags.TransferReadBit | AccessFlags.TransferWriteBit,
            };
            var stages = PipelineStageFlags.ComputeShaderBit | PipelineStageFlags.TransferBit;
            _vk.CmdPipelineBarrier(_commands, stages, stages, 0, 1, &barrier, 0, null, 0, null);
            Barriers++;
            _pending.Clear();
        }
        foreach (var (buffer, access) in uses)
            _pending[buffer] = _pending.TryGetValue(buffer, out var before) ? before | access : access;
    }

    /// <summary>
    /// The one dispatch entry point: checks the bindings against the shader's declared layout and the push-constant
    /// block's size, binds, pushes and records <c>vkCmdDispatch</c> with barriers from the declared accesses.
    /// </summary>
    public void Dispatch<TPush>(ShaderSpec spec, ReadOnlySpan<Binding> bindings, in TPush push, uint groupsX, uint groupsY, uint groupsZ, ReadOnlySpan<int> constants)
        where TPush : unmanaged
    {
        lock (Sync) DispatchLocked(spec, bindings, in push, groupsX, groupsY, groupsZ, constants);
    }

    private void DispatchLocked<TPush>(ShaderSpec spec, ReadOnlySpan<Binding> bindings, in TPush push, uint groupsX, uint groupsY, uint groupsZ, ReadOnlySpan<int> constants)
        where TPush : unmanaged
    {
        if (bindings.Length != spec.Bindings)
            throw new ComputeException($"shader '{spec.Name}' binds {spec.Bindings} buffers, dispatch gave {bindings.Length}");
        if (Unsafe.SizeOf<TPush>() != spec.PushConstantBytes)
            throw new ComputeException($"shader '{spec.Name}' has {spec.PushConstantBytes} bytes of push constants, dispatch gave {typeof(TPush).Name} of {Unsafe.SizeOf<TPush>()}");
        if (groupsX == 0 || groupsY == 0 || groupsZ == 0) return;
        if (groupsX > Limits.MaxWorkgroupCountX)
            throw new ComputeException($"shader '{spec.Name}': {groupsX} workgroups along x exceed the device's {Limits.MaxWorkgroupCountX}");

        var (pipeline, layout, setLayout, _) = _pipelines.Get(spec, constants);
        var set = _descriptors.Allocate(setLayout);
        var infos = stackalloc DescriptorBufferInfo[bindings.Length];
        var writes = stackalloc WriteDescriptorSet[bindings.Length];
        Span<(ulong, BindingAccess)> uses = stackalloc (ulong, BindingAccess)[bindings.Length];
        for (int i = 0; i < bindings.Length; i++)
        {
            var b = bindings[i];
            if (b.Buffer.Disposed) throw new ObjectDisposedException(b.Buffer.Name);
            if (b.Range > Limits.MaxStorageBufferRange)
                throw new ComputeException($"shader '{spec.Name}' binding {i} ('{b.Buffer.Name}'): range {b.Range} bytes exceeds maxStorageBufferRange {Limits.MaxStorageBufferRange}; bind it in ranges");
            if (b.Offset % Limits.MinStorageBufferOffsetAlignment != 0)
                throw new ComputeException($"shader '{spec.Name}' binding {i} ('{b.Buffer.Name}'): offset {b.Offset} is not a multiple of {Limits.MinStorageBufferOffsetAlignment}");
            infos[i] = new DescriptorBufferInfo(b.Buffer.Handle, (ulong)b.Offset, (ulong)Math.Max(4, b.Range));
            writes[i] = new WriteDescriptorSet
            {
                SType = StructureType.WriteDescriptorSet,
                DstSet = set,
                DstBinding = (uint)i,
                DescriptorCount = 1,
                DescriptorType = DescriptorType.StorageBuffer,
                PBufferInfo = &infos[i],
            };
            uses[i] = (b.Buffer.Handle.Handle, b.Access);
        }
        _vk.UpdateDescriptorSets(_device, (uint)bindings.Length, writes, 0, null);

        BeginIfNeeded();
        TrackHazards(uses);
        _vk.CmdBindPipeline(_commands, PipelineBindPoint.Compute, pipeline);
        _vk.CmdBindDescriptorSets(_commands, PipelineBindPoint.Compute, layout, 0, 1, &set, 0, null);
        if (spec.PushConstantBytes > 0)
        {
            var copy = push;
            _vk.CmdPushConstants(_commands, layout, ShaderStageFlags.ComputeBit, 0, (uint)spec.PushConstantBytes, &copy);
        }
        _vk.CmdDispatch(_commands, groupsX, groupsY, groupsZ);
        Dispatches++;
    }

    /// <summary>Dispatches recorded so far.</summary>
    public long Dispatches { get; private set; }

    /// <summary>Pipelines created so far (for tests: one per shader and specialization, however many dispatches).</summary>
    public int Pipelines => _pipelines.Count;

    /// <summary>Records a buffer-to-buffer copy (transfer queue op), tracked like a dispatch.</summary>
    public void CopyBuffer(VulkanBufferBase source, long sourceOffset, VulkanBufferBase destination, long destinationOffset, long bytes)
    {
        lock (Sync) CopyBufferLocked(source, sourceOffset, destination, destinationOffset, bytes);
    }

    private void CopyBufferLocked(VulkanBufferBase source, long sourceOffset, VulkanBufferBase destination, long destinationOffset, long bytes)
    {
        if (bytes <= 0) return;
        BeginIfNeeded();
        Span<(ulong, BindingAccess)> uses = stackalloc (ulong, BindingAccess)[2];
        uses[0] = (source.Handle.Handle, BindingAccess.Read);
        uses[1] = (destination.Handle.Handle, BindingAccess.Write);
        TrackHazards(uses);
        var region = new BufferCopy((ulong)sourceOffset, (ulong)destinationOffset, (ulong)bytes);
        _vk.CmdCopyBuffer(_commands, source.Handle, destination.Handle, 1, &region);
    }

    /// <summary>Records one buffer-to-buffer copy of many regions (byte offsets; regions must not overlap).</summary>
    public void CopyBufferRegions(VulkanBufferBase source, VulkanBufferBase destination, ReadOnlySpan<BufferCopy> regions)
    {
        lock (Sync) CopyBufferRegionsLocked(source, destination, regions);
    }

    private void CopyBufferRegionsLocked(VulkanBufferBase source, VulkanBufferBase destination, ReadOnlySpan<BufferCopy> regions)
    {
        if (regions.Length == 0) return;
        BeginIfNeeded();
        Span<(ulong, BindingAccess)> uses = stackalloc (ulong, BindingAccess)[2];
        uses[0] = (source.Handle.Handle, BindingAccess.Read);
        uses[1] = (destination.Handle.Handle, BindingAccess.Write);
        TrackHazards(uses);
        fixed (BufferCopy* r = regions) _vk.CmdCopyBuffer(_commands, source.Handle, destination.Handle, (uint)regions.Length, r);
    }

    /// <summary>Records a fill of a whole buffer with zeros.</summary>
    public void ClearBuffer(VulkanBufferBase buffer)
    {
        lock (Sync) ClearBufferLocked(buffer);
    }

    private void ClearBufferLocked(VulkanBufferBase buffer)
    {
        BeginIfNeeded();
        Span<(ulong, BindingAccess)> uses = stackalloc (ulong, BindingAccess)[1];
        uses[0] = (buffer.Handle.Handle, BindingAccess.Write);
        TrackHazards(uses);
        _vk.CmdFillBuffer(_commands, buffer.Handle, 0, Vk.WholeSize, 0);
    }

    public bool HasPendingWork => _recording;

    /// <summary>Ends the command buffer, submits it, waits for its fence and recycles descriptor sets.</summary>
    public void Flush()
    {
        lock (Sync) FlushLocked();
    }

    private void FlushLocked()
    {
        if (!_recording || _disposed) return;
        // Make device writes visible to host reads of mapped memory.
        var barrier = new MemoryBarrier
        {
            SType = StructureType.MemoryBarrier,
            SrcAccessMask = AccessFlags.ShaderWriteBit | AccessFlags.TransferWriteBit,
            DstAccessMask = AccessFlags.HostReadBit,
        };
        _vk.CmdPipelineBarrier(_commands, PipelineStageFlags.ComputeShaderBit | PipelineStageFlags.TransferBit, PipelineStageFlags.HostBit, 0, 1, &barrier, 0, null, 0, null);
        _vk.EndCommandBuffer(_commands).Check("vkEndCommandBuffer");
        _recording = false;
        var commands = _commands;
        var submit = new SubmitInfo { SType = StructureType.SubmitInfo, CommandBufferCount = 1, PCommandBuffers = &commands };
        var fence = _fence;
        _vk.QueueSubmit(_queue, 1, &submit, fence).Check("vkQueueSubmit");
        _vk.WaitForFences(_device, 1, &fence, true, ulong.MaxValue).Check("vkWaitForFences");
        _vk.ResetFences(_device, 1, &fence).Check("vkResetFences");
        _vk.ResetCommandBuffer(_commands, 0).Check("vkResetCommandBuffer");
        _descriptors.Reset();
        _pending.Clear();
        Submits++;
        AfterFlush?.Invoke();
    }

    /// <summary>Runs after every completed submit (the backend recycles its upload arena here).</summary>
    public event Action? AfterFlush;

    private void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(VulkanDevice));
    }

    public void Dispose()
    {
        if (_disposed) return;
        Flush();
        _vk.DeviceWaitIdle(_device);
        _disposed = true;
        _pipelines.Dispose();
        _descriptors.Dispose();
        _vk.DestroyFence(_device, _fence, null);
        _vk.DestroyCommandPool(_device, _commandPool, null);
        _vk.DestroyDevice(_device, null);
        _vk.DestroyInstance(_instance, null);
    }
}
