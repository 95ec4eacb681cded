namespace RLHFSpec.Compute.Rlhf;

/// <summary>One epoch of reward-model training: mean Bradley–Terry loss over its steps, held-out pairwise accuracy and loss (null without a held-out set).</summary>
public sealed record RewardEpoch(int Epoch, double TrainLoss, double? EvalAccuracy, double? EvalLoss, double Seconds);
