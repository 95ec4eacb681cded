namespace RLHFSpec.Compute.Engine;

/// <summary>Device limits read at start-up; kernels size themselves from these, never from a vendor's numbers.</summary>
/// <param name="SubgroupSize">Threads per subgroup (warp / wave); 1 on the CPU backend.</param>
/// <param name="MaxStorageBufferRange">Largest range one storage-buffer binding may cover, in bytes (128 MiB on lavapipe).</param>
/// <param name="MinStorageBufferOffsetAlignment">Alignment of a binding's offset, in bytes.</param>
/// <param name="MaxSharedMemoryBytes">Workgroup shared memory, in bytes.</param>
/// <param name="MaxWorkgroupInvocations">Largest workgroup, in threads.</param>
/// <param name="MaxWorkgroupCountX">Largest dispatch along x, in workgroups.</param>
/// <param name="DeviceMemoryBytes">Size of the largest memory heap the backend allocates from.</param>
public sealed record DeviceLimits(
    int SubgroupSize,
    long MaxStorageBufferRange,
    long MinStorageBufferOffsetAlignment,
    int MaxSharedMemoryBytes,
    int MaxWorkgroupInvocations,
    int MaxWorkgroupCountX,
    long DeviceMemoryBytes);
