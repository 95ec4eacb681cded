namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// The drained instances (at most <see cref="Reallocator.DrainThreshold"/> samples) as a caller keeps them for
/// <see cref="Reallocator.PlanDrained(InstanceLoad, IDrainedReceivers)"/>, split so that a donor whose plan no empty
/// instance can take is refused without visiting them one by one (the simulator, at 10⁵ instances, where most are
/// empty at the end of a stage).
/// </summary>
public interface IDrainedReceivers
{
    /// <summary>
    /// The first empty drained instance with index greater than <paramref name="after"/>, other than
    /// <paramref name="donor"/>, that could generate samples of longest <paramref name="longest"/> and total
    /// <paramref name="total"/> predicted tokens in under <paramref name="underSeconds"/> by its step time
    /// (<paramref name="unknownAs"/> where it has none yet); null when there is none. It may return an instance
    /// that then turns out too slow (the caller checks exactly), never skip one that is not.
    /// </summary>
    InstanceLoad? NextEmpty(int after, int donor, double longest, double total, double underSeconds, StepTime unknownAs);

    /// <summary>The drained instances that hold samples, ordered by predicted work (&gt; 0), then index.</summary>
    IEnumerable<InstanceLoad> Loaded { get; }
}
