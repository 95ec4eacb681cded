namespace RLHFSpec.Compute.Generation;

/// <summary>One finished sample (runs return one per sample, in <see cref="GeneratorRunResult"/> or <see cref="Cluster.ClusterRunResult"/>): response tokens, the policy's log-prob of each (log_softmax(logits / T)), and why it stopped.</summary>
public sealed record SampleResult(GenerationRequest Request, int[] Tokens, float[] LogProbs, FinishReason FinishReason);
