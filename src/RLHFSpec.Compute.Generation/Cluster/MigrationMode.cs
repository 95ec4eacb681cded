namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// How a moved live sample reaches its target: <see cref="Copy"/> its KV blocks, <see cref="Recompute"/> them
/// (re-prefill its committed tokens on the target), or <see cref="Auto"/>: per sample, whichever the measured
/// costs say is faster. A copy falls back to recompute when a model cannot copy or the target's cache is full.
/// </summary>
public enum MigrationMode { Auto, Copy, Recompute }
