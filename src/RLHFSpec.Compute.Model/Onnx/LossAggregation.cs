namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>How per-token losses [B, T] become one scalar.</summary>
public enum LossAggregation
{
    /// <summary>Mean over all unmasked tokens of the batch (token-level, as DAPO / most PPO code).</summary>
    TokenMean,
    /// <summary>Mean over each sequence's unmasked tokens, then mean over sequences (GRPO's original form).</summary>
    SequenceMean,
}
