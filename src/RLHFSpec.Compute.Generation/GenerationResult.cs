namespace RLHFSpec.Compute.Generation;

/// <summary>A finished sample: response tokens, the policy's log-prob of each (log_softmax(logits / T)), and why it stopped.</summary>
public sealed record GenerationResult(GenerationRequest Request, int[] Tokens, float[] LogProbs, FinishReason FinishReason);
