namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>
/// A flattened ragged batch of draft trees to verify. Sample s owns draft nodes
/// [NodeOffsets[s], NodeOffsets[s+1]) (a chain is a tree with one child per node; zero nodes is allowed).
/// Logit rows: sample s has NodeOffsets[s+1] − NodeOffsets[s] + 1 rows starting at
/// <see cref="RowOffset"/>(s) = NodeOffsets[s] + s: first the root (the last committed token), then node 0, 1, …
/// The draft-logit buffer has the same row layout: row r holds the draft model's logits from which the
/// children of that node were sampled.
/// </summary>
public readonly ref struct VerifyBatch
{
    /// <summary>[S + 1] cu_num_draft_tokens.</summary>
    public ReadOnlySpan<int> NodeOffsets { get; init; }
    /// <summary>[totalNodes] draft token of each node.</summary>
    public ReadOnlySpan<int> DraftTokens { get; init; }
    /// <summary>[totalNodes] parent of each node, local to its sample: −1 = root, else an index smaller than the node's own.</summary>
    public ReadOnlySpan<int> Parents { get; init; }
    /// <summary>[S] sampling settings; Position = position of the token decided at the root.</summary>
    public ReadOnlySpan<SamplingParams> Params { get; init; }
    /// <summary>[S] how each sample's children were drawn.</summary>
    public ReadOnlySpan<DraftKind> Kinds { get; init; }
    public int VocabSize { get; init; }

    public int NumSamples => Params.Length;
    public int TotalNodes => NodeOffsets.Length == 0 ? 0 : NodeOffsets[^1];
    public int TotalRows => TotalNodes + NumSamples;
    public int RowOffset(int sample) => NodeOffsets[sample] + sample;
}

/// <summary>
/// Outputs of verification. Sample s accepts AcceptedCount[s] nodes, listed (local node indices, root to
/// leaf) in AcceptedNodes[NodeOffsets[s] ..]; then emits NextToken[s], recovered (after a rejection) or bonus
/// (all of a path accepted). LogProbs[RowOffset(s) + j], j = 0..AcceptedCount[s], is the log-probability of
/// the j-th emitted token (accepted tokens, then the next token) under log_softmax(logits / T) of the target
/// (T = 1 when greedy).
/// </summary>
public readonly ref struct VerifyOutputs
{
    /// <summary>[S]</summary>
    public Span<int> AcceptedCount { get; init; }
    /// <summary>[totalNodes]</summary>
    public Span<int> AcceptedNodes { get; init; }
    /// <summary>[S]</summary>
    public Span<int> NextToken { get; init; }
    /// <summary>[totalNodes + S]</summary>
    public Span<float> LogProbs { get; init; }
}
