namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>How an <see cref="OnnxSession"/> is created: execution provider, device and thread counts.</summary>
public sealed record OnnxSessionOptions
{
    public ExecutionProvider Provider { get; init; } = ExecutionProvider.Cpu;

    /// <summary>GPU ordinal for Cuda/Dml.</summary>
    public int DeviceId { get; init; }

    /// <summary>Threads inside one op (0 = ONNX Runtime's default, one per physical core).</summary>
    public int IntraOpThreads { get; init; }

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
