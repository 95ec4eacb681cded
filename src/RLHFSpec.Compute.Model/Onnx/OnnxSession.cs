using Microsoft.ML.OnnxRuntime;

namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// An ONNX Runtime inference session over a builder's serialised graph, on the execution provider chosen by
/// option. Inputs are <see cref="OrtValue"/>s over existing host memory (see <see cref="OrtTensors"/>), so
/// weights live in one place; outputs are either allocated by ONNX Runtime or written into caller-provided
/// buffers.
/// </summary>
public sealed class OnnxSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions = new();

    public OnnxSession(byte[] model, OnnxSessionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        Options = options ?? new OnnxSessionOptions();
        using var so = CreateSessionOptions(Options);
        _session = new InferenceSession(model, so);
        InputNames = _session.InputMetadata.Keys.ToArray();
        OutputNames = _session.OutputMetadata.Keys.ToArray();
    }

    public OnnxSessionOptions Options { get; }
    public IReadOnlyList<string> InputNames { get; }
    public IReadOnlyList<string> OutputNames { get; }

    /// <summary>Runs the graph; returns the requested outputs (all if null), allocated by ONNX Runtime.</summary>
    public IDisposableReadOnlyCollection<OrtValue> Run(IReadOnlyDictionary<string, OrtValue> inputs,
        IReadOnlyCollection<string>? outputs = null)
    {
        CheckInputs(inputs);
        return _session.Run(_runOptions, inputs, outputs ?? OutputNames.ToArray());
    }

    /// <summary>Runs the graph writing each named output into the caller's pre-allocated OrtValue (no copy out).</summary>
    public void Run(IReadOnlyDictionary<string, OrtValue> inputs, IReadOnlyDictionary<string, OrtValue> outputs)
    {
        CheckInputs(inputs);
        foreach (var name in outputs.Keys)
            if (!OutputNames.Contains(name))
                throw new ArgumentException($"ONNX session: graph has no output '{name}' (outputs: {string.Join(", ", OutputNames)})", nameof(outputs));
        _session.Run(_runOptions, inputs.Keys.ToArray(), inputs.Values.ToArray(), outputs.Keys.ToArray(), outputs.Values.ToArray());
    }

    /// <summary>An I/O binding for repeated runs over the same buffers (see <see cref="OnnxBinding"/>).</summary>
    public OnnxBinding CreateBinding() => new(_session, _runOptions, InputNames, OutputNames);

    private void CheckInputs(IReadOnlyDictionary<string, OrtValue> inputs)
    {
        foreach (var name in InputNames)
            if (!inputs.ContainsKey(name))
                throw new ArgumentException($"ONNX session: input '{name}' is missing", nameof(inputs));
        foreach (var name in inputs.Keys)
            if (!InputNames.Contains(name))
                throw new ArgumentException($"ONNX session: graph has no input '{name}' (inputs: {string.Join(", ", InputNames)})", nameof(inputs));
    }

    /// <summary>Session options for the chosen provider; a provider this build or OS cannot run is a clear error.</summary>
    public static SessionOptions CreateSessionOptions(OnnxSessionOptions options)
    {
        if (options.IntraOpThreads < 0 || options.InterOpThreads < 0)
            throw new ArgumentException($"ONNX session: thread counts must be >= 0 (intra {options.IntraOpThreads}, inter {options.InterOpThreads})", nameof(options));
        var so = new SessionOptions { IntraOpNumThreads = options.IntraOpThreads, InterOpNumThreads = options.InterOpThreads };
        if (options.InterOpThreads > 1) so.ExecutionMode = ExecutionMode.ORT_PARALLEL;
        if (!options.AllowSpinning)
        {
            so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
            so.AddSessionConfigEntry("session.inter_op.allow_spinning", "0");
        }
        try
        {
            switch (options.Provider)
            {
                case ExecutionProvider.Cpu:
                    break;
                case ExecutionProvider.Cuda:
                    RequireProvider("CUDAExecutionProvider", "cuda",
                        "this build references the CPU package Microsoft.ML.OnnxRuntime; CUDA needs Microsoft.ML.OnnxRuntime.Gpu and the CUDA/cuDNN libraries");
                    so.AppendExecutionProvider_CUDA(options.DeviceId);
                    break;
                case ExecutionProvider.Dml:
                    if (!OperatingSystem.IsWindows())
                        throw new PlatformNotSupportedException(
                            "execution provider option 'dml': DirectML runs only on Windows (Microsoft.ML.OnnxRuntime.DirectML is referenced only when building there)");
                    RequireProvider("DmlExecutionProvider", "dml", "the DirectML build of ONNX Runtime is not loaded");
                    // DirectML does not support parallel execution or memory-pattern optimisation.
                    so.ExecutionMode = ExecutionMode.ORT_SEQUENTIAL;
                    so.EnableMemoryPattern = false;
                    so.AppendExecutionProvider_DML(options.DeviceId);
                    break;
                default:
                    throw new ArgumentException($"execution provider option: unknown value {options.Provider}", nameof(options));
            }
            return so;
        }
        catch (OnnxRuntimeException e)
        {
            so.Dispose();
            throw new InvalidOperationException($"execution provider option '{options.Provider.ToString().ToLowerInvariant()}': ONNX Runtime could not append it: {e.Message}", e);
        }
        catch
        {
            so.Dispose();
            throw;
        }
    }

    private static void RequireProvider(string ortName, string option, string missing)
    {
        if (!OrtEnv.Instance().GetAvailableProviders().Contains(ortName))
            throw new InvalidOperationException($"execution provider option '{option}': {ortName} is not available — {missing}");
    }

    public void Dispose()
    {
        _session.Dispose();
        _runOptions.Dispose();
    }
}
