namespace RLHFSpec.Compute.Model;

/// <summary>
/// A live sample's committed KV, captured by <see cref="IMigratableModel.Snapshot"/> on its model's thread so that
/// the copy into another model can run on that model's thread while the source goes on with its other samples.
/// </summary>
public interface IKvSnapshot
{
    /// <summary>Bytes the copy moves.</summary>
    long Bytes { get; }

    /// <summary>
    /// Copies the KV into <paramref name="target"/> (the model the snapshot was taken for) as
    /// <paramref name="targetId"/>; false, changing nothing, when the target is out of KV blocks. Call on the
    /// target's thread while it runs no forward; the source may be running forwards over its other samples.
    /// </summary>
    bool TryCopyTo(ITargetModel target, long targetId);
}
