using RLHFSpec.Compute.Generation.Cluster;

namespace RLHFSpec.Compute.Tests.Generation;

/// <summary>
/// Makes the long-tail tests independent of thread scheduling: instance 0 (which holds the tail under round-robin)
/// waits before its second step until every other instance has drained once, so a drained receiver is there at the
/// donor's next step boundaries however late the other threads start on a loaded machine.
/// </summary>
internal static class ClusterTestHolds
{
    public static ClusterOptions HoldTailUntilOthersDrain(this ClusterOptions options, int instances)
    {
        if (instances < 2) return options;
        var drained = new CountdownEvent(instances - 1);
        var seen = new bool[instances]; // written under the cluster's lock (OnIdle runs there)
        return options with
        {
            OnIdle = k =>
            {
                if (k == 0 || seen[k]) return;
                seen[k] = true;
                drained.Signal();
            },
            BeforeStep = (k, step) =>
            {
                if (k == 0 && step == 1 && !drained.Wait(TimeSpan.FromSeconds(60))) throw new TimeoutException("the other instances never drained");
            },
        };
    }
}
