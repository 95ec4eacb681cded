namespace RLHFSpec.Compute.Engine;

/// <summary>A failure of the compute device itself (a Vulkan call, a missing driver), naming what failed.</summary>
public sealed class ComputeException : Exception
{
    public ComputeException(string message) : base(message) { }
    public ComputeException(string message, Exception inner) : base(message, inner) { }
}
