using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Cli.SelfTest;

/// <summary>One kernel run once on a device with fresh random inputs, compared with its plain C# reference.</summary>
/// <param name="Kernel">kernel name as in the shader file, e.g. "verify".</param>
/// <param name="Shape">what the inputs were, for the verdict line.</param>
/// <param name="Run">runs the kernel and the reference; returns null when they agree, else what differs.
/// Its string out parameter is a short summary of the agreement (e.g. the largest log-prob difference).</param>
internal sealed record KernelCheck(string Kernel, string Shape, KernelCheck.Body Run)
{
    public delegate string? Body(ComputeBackend backend, Random random, out string agreement);
}
