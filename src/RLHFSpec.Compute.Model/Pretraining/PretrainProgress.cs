namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>What the pretrainer is doing now, for a progress bar.</summary>
/// <param name="Model">The model's folder name.</param>
/// <param name="Phase">"train", "eval" or "saved".</param>
/// <param name="Step">Optimizer steps done.</param>
/// <param name="TotalSteps">Optimizer steps planned for this model.</param>
/// <param name="Loss">Mean training loss over the recent steps (NaN before the first).</param>
public readonly record struct PretrainProgress(string Model, string Phase, int Step, int TotalSteps, double Loss);
