namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>How an <see cref="OnnxSession"/> is created: execution provider, device and thread counts.</summary>
public sealed record OnnxSessionOptions
{
    public ExecutionProvider Provider { get; init; } = ExecutionProvider.Cpu;

    /// <summary>GPU ordinal for Cuda/Dml.</summary>
    public int DeviceId { get; init; }

    /// <summary>Threads inside one op (0 = ONNX Runtime's default, one per physical core).</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>
    /// Whether ONNX Runtime's worker threads busy-wait after a run (its default: good for back-to-back runs such as
    /// training). The generation runtime turns it off: it interleaves short runs with engine kernels on the same
    /// cores, and spinning workers steal those cores from the kernels (measured: tree-verify 16 × 64 nodes 1.6×
    /// faster, decode at batch 256 1.35× faster without spinning; training 1.45× slower).
    /// </summary>
    public bool AllowSpinning { get; init; } = true;

    /// <summary>Threads running independent ops in parallel (0 = default; &gt;1 turns on parallel execution).</summary>
    public int InterOpThreads { get; init; }

    /// <summary>Parses the <c>--ep</c> option value: <c>cpu</c>, <c>cuda</c> or <c>dml</c> (case-insensitive).</summary>
    public static ExecutionProvider ParseProvider(string text) => text.Trim().ToLowerInvariant() switch
    {
        "cpu" => ExecutionProvider.Cpu,
        "cuda" => ExecutionProvider.Cuda,
        "dml" or "directml" => ExecutionProvider.Dml,
        _ => throw new ArgumentException($"execution provider option: '{text}' is not one of cpu, cuda, dml", nameof(text)),
    };
}
