namespace RLHFSpec.Compute.Model;

/// <summary>
/// A model whose per-sample KV can be copied into another model of the same shape (the basis of migrating a live
/// sample between generation instances without re-prefilling it). Only committed tokens move: a sample with
/// tentative (fed but not committed) tokens or reservations cannot be copied. Neither model may be running a
/// forward while a copy runs; the caller (the cluster) copies between steps.
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
}
