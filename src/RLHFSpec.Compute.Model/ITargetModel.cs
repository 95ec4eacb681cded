using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Model;

/// <summary>
/// The narrow contract between the generation loop and a model with a KV cache (the policy, or a draft model):
/// reserve room, run a forward over new tokens (prefill, decode, tree verification are all this), commit the ones
/// that were kept, roll back the rejected ones, release a finished or preempted sample. The loop never sees ONNX or Vulkan types.
/// </summary>
public interface ITargetModel
{
    int VocabSize { get; }

    /// <summary>The engine backend whose buffers hold logits (verification runs there).</summary>
    ComputeBackend Backend { get; }

    /// <summary>Longest sequence (prompt + response) the model accepts.</summary>
    int MaxContext { get; }

    /// <summary>Committed tokens of the sample in the cache (0 for an unknown sample).</summary>
    int CommittedLength(long sampleId);

    /// <summary>Makes room for <paramref name="newTokens"/> more tentative tokens; false = out of KV blocks (the caller preempts), never an overwrite.</summary>
    bool TryReserve(long sampleId, int newTokens);

    /// <summary>Feeds the batch's tokens and writes the requested logits rows: // [batch.LogitRows.Length, VocabSize].</summary>
    void Forward(in ForwardBatch batch, DeviceBuffer<float> logits);

    /// <summary>
    /// Keeps the tentative tokens listed (indices in feeding order, a root-to-leaf path in tree order) as committed.
    /// Commit only keeps: the other tentative tokens are rejected and hold their room until <see cref="Rollback(long)"/>
    /// discards them; the sample may not be reserved, fed or committed again before that.
    /// </summary>
    void Commit(long sampleId, ReadOnlySpan<int> keep);

    /// <summary>
    /// Commits a step for a batch: sample i keeps keep[keepOffsets[i] .. keepOffsets[i + 1]) as <see cref="Commit(long, ReadOnlySpan{int})"/>
    /// would. The same as one call per sample, in one call.
    /// </summary>
    void Commit(ReadOnlySpan<long> sampleIds, ReadOnlySpan<int> keepOffsets, ReadOnlySpan<int> keep)
    {
        if (keepOffsets.Length != sampleIds.Length + 1 || keepOffsets[^1] != keep.Length)
            throw new ArgumentException($"keepOffsets: {keepOffsets.Length} offsets ending at {(keepOffsets.Length > 0 ? keepOffsets[^1] : 0)} for {sampleIds.Length} samples and {keep.Length} kept tokens", nameof(keepOffsets));
        for (int i = 0; i < sampleIds.Length; i++) Commit(sampleIds[i], keep[keepOffsets[i]..keepOffsets[i + 1]]);
    }

    /// <summary>
    /// Discards the sample's uncommitted tokens: those its last commit rejected, or tentative ones never committed
    /// (an abandoned step). Its committed tokens stay; room they no longer need is freed.
    /// </summary>
    void Rollback(long sampleId);

    /// <summary>Rolls back several samples, in order, as <see cref="Rollback(long)"/> would one by one.</summary>
    void Rollback(ReadOnlySpan<long> sampleIds)
    {
        foreach (long id in sampleIds) Rollback(id);
    }

    /// <summary>Frees everything of the sample.</summary>
    void Release(long sampleId);
}
