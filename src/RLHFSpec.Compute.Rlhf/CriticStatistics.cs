namespace RLHFSpec.Compute.Rlhf;

/// <summary>PPO's critic in the inference stage: its mean value over response tokens and the share of the returns' variance it explains.</summary>
internal sealed record CriticStatistics(double ValueMean, double ExplainedVariance);
