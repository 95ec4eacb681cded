namespace RLHFSpec.Compute.Generation;

/// <summary>
/// What a step's verification decided, flat over the step's samples: row offsets of each sample's pending token and
/// draft // [samples + 1], draft-node offsets // [samples + 1], accepted node count // [samples], accepted node
/// indices (a root-to-leaf path per sample, at its node offset) // [draft nodes], next token // [samples], and the
/// log-prob of every row's emitted token // [rows].
/// </summary>
internal sealed record StepVerification(int[] Offsets, int[] NodeOffsets, int[] AcceptedCount, int[] AcceptedNodes, int[] NextToken, float[] LogProbs)
{
    public int Rows => Offsets[^1];
}
