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

/// <summary>Requests for a set of tokenised prompts, <c>samplesPerPrompt</c> each (GRPO-style groups).</summary>
public static class GenerationRequests
{
    /// <summary>
    /// Sample id = prompt index × samplesPerPrompt + sample index (plus <paramref name="firstId"/>), so a sample's
    /// random numbers — keyed by (seed, sample id, position) — are fixed by the request set, not by scheduling.
    /// Temperature 0 = greedy.
    /// </summary>
    public static GenerationRequest[] For(IReadOnlyList<int[]> prompts, int samplesPerPrompt, int maxNewTokens, float temperature, float topP, ulong seed, long firstId = 0)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (samplesPerPrompt < 1) throw new ArgumentException($"samples per prompt: {samplesPerPrompt}, must be >= 1", nameof(samplesPerPrompt));
        if (maxNewTokens < 1) throw new ArgumentException($"max new tokens: {maxNewTokens}, must be >= 1", nameof(maxNewTokens));
        if (!(temperature >= 0) || !float.IsFinite(temperature)) throw new ArgumentException($"temperature: {temperature}, must be a finite number >= 0", nameof(temperature));
        if (!(topP > 0 && topP <= 1)) throw new ArgumentException($"top-p: {topP}, must be in (0, 1]", nameof(topP));
        var requests = new GenerationRequest[prompts.Count * samplesPerPrompt];
        for (int p = 0; p < prompts.Count; p++)
            for (int k = 0; k < samplesPerPrompt; k++)
            {
                long id = firstId + (long)p * samplesPerPrompt + k;
                var sampling = temperature == 0 ? SamplingParams.Greedy((uint)id, 0) : SamplingParams.Random(temperature, seed, (uint)id, 0, topP: topP);
                requests[p * samplesPerPrompt + k] = new GenerationRequest(id, p, k, prompts[p], sampling, maxNewTokens);
            }
        return requests;
    }
}
