namespace RLHFSpec.Compute.Generation;

/// <summary>
/// <see cref="DraftAgreement.Measure"/>'s result: sequences and positions measured, the mean over positions of
/// Σ_x min(p(x), q(x)) (expected acceptance per drafted token in speculative sampling) and the fraction of positions
/// where the argmaxes agree.
/// </summary>
public sealed record DraftAgreementResult(int Sequences, long Positions, double MeanOverlap, double ArgmaxAgreement);
