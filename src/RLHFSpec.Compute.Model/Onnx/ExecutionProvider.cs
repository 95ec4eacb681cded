namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>The ONNX Runtime execution provider a session runs on.</summary>
public enum ExecutionProvider
{
    /// <summary>The default: everywhere, host memory shared with the engine's CPU device.</summary>
    Cpu,
    /// <summary>NVIDIA CUDA; needs the GPU build of ONNX Runtime (not referenced by default).</summary>
    Cuda,
    /// <summary>DirectML; Windows only (Microsoft.ML.OnnxRuntime.DirectML is referenced only there).</summary>
    Dml,
}
