namespace RLHFSpec.Compute.Rlhf;

/// <summary>What the training stage did: its gradient steps and their mean policy loss, gradient norm and (PPO) value loss.</summary>
/// <param name="ValueLoss">Mean value loss of the critic's steps; null without a critic.</param>
internal sealed record TrainingStageResult(int Steps, double Loss, double GradNorm, double? ValueLoss);
