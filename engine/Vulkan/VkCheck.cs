using Silk.NET.Vulkan;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>The one place a Vulkan <see cref="Result"/> becomes an exception naming the call.</summary>
internal static class VkCheck
{
    public static void Check(this Result result, string call)
    {
        if (result != Result.Success)
            throw new ComputeException($"Vulkan call {call} failed: {result}");
    }
}
