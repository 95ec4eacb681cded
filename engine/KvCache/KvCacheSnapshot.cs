namespace RLHFSpec.Compute.Engine;

/// <summary>
/// The committed blocks of one sample of <see cref="Source"/> and their token count, captured by
/// <see cref="KvCache.Snapshot"/> so that a copy can run while the cache's owner steps its other samples.
/// </summary>
public sealed record KvCacheSnapshot(KvCache Source, int[] Blocks, int ContextLength);
