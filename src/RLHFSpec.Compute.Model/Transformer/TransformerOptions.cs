using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>How a <see cref="TransformerModel"/> runs: KV-cache memory and layout, context limit, ONNX Runtime session.</summary>
public sealed record TransformerOptions
{
    /// <summary>Bytes for the K and V caches of all layers together; the number of blocks follows from it.</summary>
    public long KvMemoryBudgetBytes { get; init; } = 256L << 20;

    /// <summary>Token slots per KV block.</summary>
    public int KvBlockSize { get; init; } = 16;

    /// <summary>Element type the KV cache stores (attention computes in fp32 either way).</summary>
    public KvDType KvDType { get; init; } = KvDType.F32;

    /// <summary>Longest sequence accepted; null = the config's max_position_embeddings.</summary>
    public int? MaxContext { get; init; }

    /// <summary>Execution provider and threads of the dense parts' ONNX Runtime sessions.</summary>
    public OnnxSessionOptions Session { get; init; } = new();

    /// <summary>What runs the dense layers; <see cref="DenseExecutorKind.Auto"/> is resolved per device by <see cref="ResolveDense"/>.</summary>
    public DenseExecutorKind Dense { get; init; } = DenseExecutorKind.Auto;

    /// <summary>The Vulkan dense executor keeps the weight matrices in fp16 (fp32 accumulation); ignored by the others.</summary>
    public bool DenseHalfWeights { get; init; }

    /// <summary>The executor <see cref="Dense"/> resolves to for a model generating on <paramref name="device"/>, with the reason (<see cref="DenseExecutorChoice.Resolve"/>).</summary>
    public DenseExecutorChoice ResolveDense(Engine.DeviceInfo device) => DenseExecutorChoice.Resolve(Dense, Session.Provider, device.Kind, device.Type);

    internal void Validate()
    {
        if (KvMemoryBudgetBytes <= 0) throw new ArgumentException($"KV memory budget: {KvMemoryBudgetBytes} bytes, must be positive", nameof(KvMemoryBudgetBytes));
        if (KvBlockSize <= 0) throw new ArgumentException($"KV block size: {KvBlockSize}, must be positive", nameof(KvBlockSize));
        if (MaxContext is <= 0) throw new ArgumentException($"max context: {MaxContext}, must be positive", nameof(MaxContext));
        if (!Enum.IsDefined(Dense)) throw new ArgumentException($"dense executor: {Dense} is not one of auto, onnx, managed, vulkan", nameof(Dense));
        if (!Enum.IsDefined(KvDType)) throw new ArgumentException($"KV dtype: {KvDType} is not one of f32, f16", nameof(KvDType));
    }
}
