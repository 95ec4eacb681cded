using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// What a proposer may read of a sample: its id, prompt, committed tokens and sampling settings. Read-only: the
/// step loop owns the sample's state and alone changes it.
/// </summary>
public interface ISampleView
{
    long SampleId { get; }

    /// <summary>The prompt's tokens.</summary>
    ReadOnlySpan<int> Prompt { get; }

    /// <summary>Prompt then response tokens committed so far (the last one pending: decided, not yet fed).</summary>
    ReadOnlySpan<int> Tokens { get; }

    /// <summary>The sample's sampling settings (temperature, top-p, seed): a draft model samples q with them.</summary>
    SamplingParams Sampling { get; }

    /// <summary>True once the sample has finished (stop token, length or context).</summary>
    bool IsFinished { get; }
}
