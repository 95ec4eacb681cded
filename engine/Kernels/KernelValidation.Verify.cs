namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    internal static void Verify(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs)
    {
        ArgumentNullException.ThrowIfNull(targetLogits);
        int samples = batch.NumSamples;
        Require(batch.VocabSize > 0, "batch.VocabSize", $"{batch.VocabSize}, must be > 0");
        if (samples == 0)
            Require(batch.NodeOffsets.Length <= 1 && batch.TotalNodes == 0, "batch.NodeOffsets", "must be empty or [0] when there are no samples");
        else
            RequireOffsets(batch.NodeOffsets, samples, "batch.NodeOffsets");
        int nodes = batch.TotalNodes;
        RequireLength(batch.DraftTokens, nodes, "batch.DraftTokens");
        RequireLength(batch.Parents, nodes, "batch.Parents");
        RequireLength(batch.Kinds, samples, "batch.Kinds");
        RequireRange(batch.DraftTokens, 0, batch.VocabSize, "batch.DraftTokens");

        bool needsDraft = false;
        for (int s = 0; s < samples; s++)
        {
            batch.Params[s].Validate("batch.Params", s);
            var kind = batch.Kinds[s];
            Require(kind is DraftKind.Sampled or DraftKind.Deterministic, "batch.Kinds", $"batch.Kinds[{s}] = {(int)kind} is not a DraftKind");
            int first = batch.NodeOffsets[s], count = batch.NodeOffsets[s + 1] - first;
            for (int i = 0; i < count; i++)
            {
                int parent = batch.Parents[first + i];
                if (parent < -1 || parent >= i)
                    throw new ArgumentOutOfRangeException("batch.Parents",
                        $"batch.Parents[{first + i}] = {parent} (sample {s}, local node {i}): must be in [-1, {i})");
            }
            if (kind == DraftKind.Sampled && count > 0 && !batch.Params[s].IsGreedy) needsDraft = true;
        }

        long logitElements = (long)batch.TotalRows * batch.VocabSize;
        RequireAtLeast(targetLogits, logitElements, nameof(targetLogits));
        if (needsDraft)
        {
            Require(draftLogits != null, nameof(draftLogits), "required: a non-greedy sample of kind Sampled has a draft");
            RequireAtLeast(draftLogits!, logitElements, nameof(draftLogits));
        }

        RequireLength<int>(outputs.AcceptedCount, samples, "outputs.AcceptedCount");
        RequireLength<int>(outputs.AcceptedNodes, nodes, "outputs.AcceptedNodes");
        RequireLength<int>(outputs.NextToken, samples, "outputs.NextToken");
        RequireLength<float>(outputs.LogProbs, (long)nodes + samples, "outputs.LogProbs");
    }

    internal static void Sample(ReadOnlySpan<SamplingParams> rows, DeviceBuffer<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs)
    {
        ArgumentNullException.ThrowIfNull(logits);
        Require(vocabSize > 0, nameof(vocabSize), $"{vocabSize}, must be > 0");
        for (int r = 0; r < rows.Length; r++) rows[r].Validate(nameof(rows), r);
        RequireAtLeast(logits, (long)rows.Length * vocabSize, nameof(logits));
        RequireLength<int>(tokens, rows.Length, nameof(tokens));
        RequireLength<float>(logProbs, rows.Length, nameof(logProbs));
    }

    /// <summary>Per-row status a kernel reports for the logit rows it read (the Vulkan shaders write the same codes).</summary>
    internal const int RowOk = 0, RowNotFinite = 1, RowNoFiniteLogit = 2;

    /// <summary>Throws for a bad logit row found while running a kernel (checked by the host after the kernel ran).</summary>
    internal static void ThrowBadRow(int status, string argument, long row)
    {
        if (status == RowNotFinite)
            throw new ArgumentException($"{argument}: row {row} contains NaN or +Inf", argument);
        if (status == RowNoFiniteLogit)
            throw new ArgumentException($"{argument}: row {row} has no finite logit", argument);
        throw new InvalidOperationException($"{argument}: row {row}: unknown status {status}");
    }
}
