namespace RLHFSpec.Compute.Model;

/// <summary>
/// One forward pass over a flattened ragged batch of new tokens (no padding). Sample s feeds tokens
/// [TokenOffsets[s], TokenOffsets[s+1]); they join the sample's tentative tokens (those fed since its last
/// <see cref="ITargetModel.Commit"/>), numbered in feeding order. A token's parent is the index of a tentative
/// token (possibly fed by an earlier forward) or −1 for the committed context: a token sees the committed context
/// and its tentative ancestors, so a chain has parents i − 1 and a draft tree has its own shape. Position of a
/// token = committed length + its depth − 1.
/// </summary>
public readonly ref struct ForwardBatch
{
    /// <summary>[S]</summary>
    public ReadOnlySpan<long> SampleIds { get; init; }
    /// <summary>[S + 1]</summary>
    public ReadOnlySpan<int> TokenOffsets { get; init; }
    /// <summary>[T]</summary>
    public ReadOnlySpan<int> Tokens { get; init; }
    /// <summary>[T] tentative index of each token's parent, −1 = committed context.</summary>
    public ReadOnlySpan<int> Parents { get; init; }
    /// <summary>
    /// Global token indices whose logits are wanted; output row r holds the logits after token LogitRows[r]. An index
    /// may repeat (samples sharing a prompt's prefill each get its last row).
    /// </summary>
    public ReadOnlySpan<int> LogitRows { get; init; }

    public int NumSamples => SampleIds.Length;
    public int NumTokens => TokenOffsets.Length == 0 ? 0 : TokenOffsets[^1];
}
