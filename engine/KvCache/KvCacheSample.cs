namespace RLHFSpec.Compute.Engine;

/// <summary>
/// One sample's part of a <see cref="KvCache"/>: its block table (logical block i → physical block), the
/// committed context length, the tokens reserved for the current step (positions ContextLength ..
/// ContextLength + PendingLength − 1, not yet committed) and, after a commit, the rejected tokens that still hold
/// their room until a rollback discards them.
/// </summary>
internal sealed class KvCacheSample
{
    public List<int> Blocks { get; } = new();
    public int ContextLength { get; set; }
    public int PendingLength { get; set; }
    public int RejectedLength { get; set; }

    /// <summary>Tokens not (or not yet) part of the context: pending and rejected.</summary>
    public int UncommittedLength => PendingLength + RejectedLength;
}
