namespace RLHFSpec.Compute.Model.Transformer.Dense;

/// <summary>
/// The dense parts of a generation forward, whatever runs them (ONNX Runtime sessions, the managed SIMD kernels,
/// a GPU executor): the transformer runtime hands over host activations between the attention stages and never
/// touches the executor's sessions or kernels itself. All of a layer's weights are read in place from the shared
/// <see cref="TransformerWeights"/> arena, so a training step that updates it is seen by the next forward.
/// </summary>
internal interface IDenseExecutor : IDisposable
{
    /// <summary>What runs the dense layers, for timings and benchmarks ("onnx", "managed", "vulkan").</summary>
    string Name { get; }

    /// <summary>Layer 0's dense part before attention: X and positions → Q, K (RoPE applied), V.</summary>
    void First(DenseActivations a);

    /// <summary>
    /// Layer <paramref name="layer"/>'s dense part after attention (output projection and residual, RMSNorm, SwiGLU MLP
    /// and residual) from X and Attended into X; then, below the last layer, layer + 1's part before attention into Q, K, V.
    /// </summary>
    void Next(int layer, DenseActivations a);

    /// <summary>Final RMSNorm and LM head: HeadRows → Logits.</summary>
    void Head(DenseActivations a);

    /// <summary>
    /// Makes the next forward see the arena's current weights (after an optimizer step); returns the seconds it took.
    /// Executors that read the arena in place have nothing to do.
    /// </summary>
    double Refresh() => 0;
}
