using Microsoft.ML.OnnxRuntime;

namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// An ONNX Runtime I/O binding for a session that runs many times with the same buffers (one generation step
/// after another): inputs and outputs are bound once, as OrtValues over the caller's memory, and each
/// <see cref="Run"/> reads and writes them in place. Outputs whose shape changes between runs (ragged batches)
/// can instead be bound to host memory that ONNX Runtime allocates per run.
/// </summary>
public sealed class OnnxBinding : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _runOptions;
    private readonly OrtIoBinding _binding;
    private readonly IReadOnlyList<string> _inputs, _outputs;
    private readonly HashSet<string> _bound = new();

    internal OnnxBinding(InferenceSession session, RunOptions runOptions, IReadOnlyList<string> inputs, IReadOnlyList<string> outputs)
    {
        _session = session;
        _runOptions = runOptions;
        _inputs = inputs;
        _outputs = outputs;
        _binding = session.CreateIoBinding();
    }

    public void BindInput(string name, OrtValue value)
    {
        if (!_inputs.Contains(name)) throw new ArgumentException($"ONNX binding: graph has no input '{name}'", nameof(name));
        _binding.BindInput(name, value);
        _bound.Add("in:" + name);
    }

    /// <summary>Binds an output to the caller's buffer (its shape must be the output's runtime shape).</summary>
    public void BindOutput(string name, OrtValue value)
    {
        CheckOutput(name);
        _binding.BindOutput(name, value);
        _bound.Add("out:" + name);
    }

    /// <summary>Lets ONNX Runtime allocate the output in host memory on each run; read it with <see cref="AllocatedOutputs"/>.</summary>
    public void BindOutputToHost(string name)
    {
        CheckOutput(name);
        _binding.BindOutputToDevice(name, OrtMemoryInfo.DefaultInstance);
        _bound.Add("out:" + name);
    }

    public void Run()
    {
        foreach (var name in _inputs)
            if (!_bound.Contains("in:" + name)) throw new InvalidOperationException($"ONNX binding: input '{name}' is not bound");
        if (!_outputs.Any(o => _bound.Contains("out:" + o))) throw new InvalidOperationException("ONNX binding: no output is bound");
        _session.RunWithBinding(_runOptions, _binding);
    }

    /// <summary>Every bound output after the last run (caller-bound ones included), in binding order.</summary>
    public IDisposableReadOnlyCollection<OrtValue> AllocatedOutputs() => _binding.GetOutputValues();

    private void CheckOutput(string name)
    {
        if (!_outputs.Contains(name)) throw new ArgumentException($"ONNX binding: graph has no output '{name}'", nameof(name));
    }

    public void Dispose() => _binding.Dispose();
}
