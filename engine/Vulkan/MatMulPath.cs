namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>Which shader computes a projection (<see cref="VulkanBackend.Project(DeviceBuffer{float}, int, int, int, DeviceBuffer{float}, int, DeviceBuffer{float}?, DeviceBuffer{float}, int, int, bool, MatMulPath)"/>).</summary>
public enum MatMulPath
{
    /// <summary>Chosen from the token count and the device's reported features (<see cref="VulkanBackend.ChooseMatMulPath"/>).</summary>
    Auto,
    /// <summary>matvec.comp: a workgroup per weight row, subgroup reductions; for decode and small verification batches.</summary>
    MatVec,
    /// <summary>matmul.comp: 64 × 64 tiles through shared memory; for prefill and large batches.</summary>
    Tiled,
    /// <summary>VK_KHR_cooperative_matrix (tensor cores and the like). Reported by the feature query; no shader yet.</summary>
    CooperativeMatrix,
}
