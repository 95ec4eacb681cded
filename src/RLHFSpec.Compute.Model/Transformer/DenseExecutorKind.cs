namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>What runs a <see cref="TransformerModel"/>'s dense layers.</summary>
public enum DenseExecutorKind
{
    /// <summary>Chosen per device (<see cref="DenseExecutorChoice.Resolve"/>): Vulkan on a discrete or integrated GPU, else the managed SIMD kernels when the ONNX Runtime provider is the CPU, else ONNX Runtime.</summary>
    Auto,
    /// <summary>ONNX Runtime sessions on the configured execution provider.</summary>
    Onnx,
    /// <summary>The engine's managed SIMD kernels on CPU worker threads.</summary>
    Managed,
    /// <summary>Vulkan compute shaders on the model's Vulkan device (weights uploaded once, refreshed after optimizer steps).</summary>
    Vulkan,
}
