namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// How a cluster first spreads samples over its instances: round-robin (the baseline), or by predicted length —
/// longest predicted first, each onto the instance with the least predicted work (LPT scheduling).
/// </summary>
public enum AssignmentPolicy { RoundRobin, PredictedLength }
