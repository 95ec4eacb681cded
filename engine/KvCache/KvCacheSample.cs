namespace RLHFSpec.Compute.Engine;

/// <summary>
/// One sample's part of a <see cref="KvCache"/>: its block table (logical block i → physical block), the
/// committed context length and the tokens reserved for the current step (positions ContextLength ..
/// ContextLength + PendingLength − 1, not yet committed).
/// </summary>
internal sealed class KvCacheSample
{
    public List<int> Blocks { get; } = new();
    public int ContextLength { get; set; }
    public int PendingLength { get; set; }
}
