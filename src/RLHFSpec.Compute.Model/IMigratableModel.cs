namespace RLHFSpec.Compute.Model;

/// <summary>
/// A model whose per-sample KV can be copied into another model of the same shape (the basis of migrating a live
/// sample between generation instances without re-prefilling it). Only committed tokens move: a sample with
/// tentative (fed but not committed) tokens or reservations cannot be copied. Neither model may be running a
/// forward while a <see cref="TryCopySampleTo"/> runs; a <see cref="Snapshot"/> copy may overlap the source's forwards.
/// </summary>
public interface IMigratableModel
{
    /// <summary>Bytes of KV the sample's committed tokens occupy (what a copy moves); 0 for an unknown sample.</summary>
    long KvBytes(long sampleId);

    /// <summary>
    /// Copies the committed KV of <paramref name="sampleId"/> into <paramref name="target"/> as
    /// <paramref name="targetId"/>, leaving the source untouched (the caller releases it). Returns false, changing
    /// nothing, when the target is out of KV blocks or is not a model this one can copy into.
    /// </summary>
    bool TryCopySampleTo(long sampleId, ITargetModel target, long targetId);

    /// <summary>
    /// Captures the committed KV of <paramref name="sampleId"/> for a copy into <paramref name="target"/> that runs
    /// on the target's thread while this model runs forwards over its other samples (the overlapped migration);
    /// null when this pair of models cannot do that safely (e.g. a device queue that two threads may not share),
    /// and the caller copies between steps with <see cref="TryCopySampleTo"/>. Until the copy has ended the caller
    /// must not feed, commit or release the sample here; afterwards it releases it.
    /// </summary>
    IKvSnapshot? Snapshot(long sampleId, ITargetModel target) => null;
}
