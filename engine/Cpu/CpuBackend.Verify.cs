using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    protected override void VerifyCore(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs) =>
        throw new NotImplementedException("verify (CPU)");
}
