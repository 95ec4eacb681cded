namespace RLHFSpec.Compute.Rlhf;

/// <summary>A checkpoint's <c>state.json</c>: the iteration it follows.</summary>
/// <param name="ConfigSha256">The run's config.json hash (absent in checkpoints written before it was kept).</param>
internal sealed record CheckpointState(int Iteration, string? ConfigSha256 = null);
