namespace RLHFSpec.Compute.Engine;

/// <summary>
/// What a backend can do. Callers ask this instead of testing the backend's type, its buffers' type or its
/// <see cref="DeviceKind"/>, so a new backend states its abilities once, here.
/// </summary>
/// <param name="HostAddressable">
/// Its buffers are plain host memory that host code may read and write in place (<see cref="DeviceBuffer{T}.HostSpan"/>)
/// with no recorded work to wait for: a copy to or from another backend needs no staging through a host array.
/// </param>
/// <param name="ConcurrentKernels">
/// Kernels and buffer operations called from several threads at once run concurrently and share no state, so two
/// users of one backend (a model's forwards and a migration's KV copy on another thread) overlap. False where every
/// operation is serialised on one device queue (Vulkan): there two users of one backend would only take turns.
/// </param>
public sealed record BackendCapabilities(bool HostAddressable, bool ConcurrentKernels);
