using System.Runtime.InteropServices;
using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// A sample inside an instance: its full token sequence (prompt, then response), the log-prob of each response
/// token, and whether its cache holds everything but the last token (the pending one, decided but not yet fed).
/// </summary>
public sealed class SampleState(GenerationRequest request, long admissionOrder) : ISampleView
{
    public GenerationRequest Request { get; } = request;
    public long SampleId => Request.SampleId;

    /// <summary>Prompt then response tokens.</summary>
    public List<int> Tokens { get; } = new(request.Prompt);
    public List<float> LogProbs { get; } = new();
    public int Generated => Tokens.Count - Request.Prompt.Length;

    /// <summary>Order of (re-)admission; the youngest is preempted first.</summary>
    public long AdmissionOrder { get; set; } = admissionOrder;

    /// <summary>True while the model's cache holds Tokens[..^1] (the last one pending).</summary>
    public bool InCache { get; set; }

    public FinishReason? Finished { get; set; }

    /// <summary>Position of the next token to decide (its index in <see cref="Tokens"/>).</summary>
    public int NextPosition => Tokens.Count;

    public int Pending => Tokens[^1];

    public int RemainingTokens => Request.MaxNewTokens - Generated;

    ReadOnlySpan<int> ISampleView.Prompt => Request.Prompt;
    ReadOnlySpan<int> ISampleView.Tokens => CollectionsMarshal.AsSpan(Tokens);
    SamplingParams ISampleView.Sampling => Request.Sampling;
    bool ISampleView.IsFinished => Finished is not null;

    /// <summary>The result of a finished sample.</summary>
    public SampleResult ToResult() =>
        new(Request, Tokens.Skip(Request.Prompt.Length).ToArray(), LogProbs.ToArray(),
            Finished ?? throw new InvalidOperationException($"sample {SampleId} has not finished"));
}
