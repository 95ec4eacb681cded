using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// One sample to generate. <see cref="SampleId"/> keys its random numbers (with the seed in
/// <see cref="Sampling"/>), so its tokens do not depend on the batch or instance it runs in; samples of one
/// prompt share <see cref="PromptIndex"/> (the suffix proposer indexes siblings by it).
/// </summary>
public sealed record GenerationRequest(long SampleId, int PromptIndex, int SampleIndex, int[] Prompt, SamplingParams Sampling, int MaxNewTokens)
{
    public void Validate(int maxContext, int vocabSize)
    {
        if (Prompt.Length == 0) throw new ArgumentException($"sample {SampleId} (prompt {PromptIndex}): empty prompt", nameof(Prompt));
        if (MaxNewTokens < 1) throw new ArgumentException($"sample {SampleId}: max new tokens {MaxNewTokens} must be >= 1", nameof(MaxNewTokens));
        if (Prompt.Length >= maxContext)
            throw new ArgumentException($"prompt {PromptIndex}: {Prompt.Length} tokens do not fit the model's context of {maxContext}", nameof(Prompt));
        foreach (int t in Prompt)
            if ((uint)t >= (uint)vocabSize) throw new ArgumentException($"prompt {PromptIndex}: token {t} outside the vocabulary [0, {vocabSize})", nameof(Prompt));
        Sampling.Validate(nameof(Sampling), (int)Math.Min(SampleId, int.MaxValue));
    }
}
