namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// Decides moves from a loaded instance (the donor, at one of its step boundaries) to drained ones: a receiver
/// holding at most <see cref="DrainThreshold"/> samples takes about half of the excess predicted work
/// (donor − receiver) / 2. Samples are taken longest predicted remaining first — the long tail is what keeps the
/// donor busy after the others drain, so splitting it is what shortens the stage — skipping any that would
/// overshoot the half by more than they bring it closer, and the donor keeps at least one sample.
/// <para>The gain is predicted with each instance's measured <see cref="StepTime"/> (fixed + per-sample seconds per
/// step): the stage ends when the later of the two ends, before and after the move, plus the moves' cost (they run
/// at the donor's step boundary). Where a step's time is mostly fixed (a small model, a GPU far from saturation)
/// splitting samples of equal length gains little, and moving the single longest sample gains nothing; where it
/// grows with the batch, halving the batch halves the tail. A plan is kept only when the gain is positive, unless
/// <see cref="RequireGain"/> is off. Instances are assumed to compute independently (a device each): on one CPU
/// shared by all instances the model overstates the gain.</para>
/// A pure class: no threads, no models; the cluster feeds it loads measured between steps.
/// </summary>
public sealed class Reallocator(int drainThreshold = 0, bool requireGain = true)
{
    public int DrainThreshold { get; } = drainThreshold >= 0 ? drainThreshold : throw new ArgumentOutOfRangeException(nameof(drainThreshold), drainThreshold, "must be >= 0");

    public bool RequireGain { get; } = requireGain;

    /// <summary>Moves from <paramref name="donor"/> to the drained among <paramref name="receivers"/> (least loaded first).</summary>
    public IReadOnlyList<MovePlan> Plan(InstanceLoad donor, IReadOnlyList<InstanceLoad> receivers)
    {
        ArgumentNullException.ThrowIfNull(donor);
        ArgumentNullException.ThrowIfNull(receivers);
        return PlanDrained(donor, receivers.Where(r => r.Instance != donor.Instance && r.Samples.Count <= DrainThreshold)
            .OrderBy(r => r.PredictedWork).ThenBy(r => r.Instance));
    }

    /// <summary>
    /// <see cref="Plan"/> for a caller that keeps its drained instances ordered itself (the simulator, at 10⁵
    /// instances): <paramref name="drained"/> must hold exactly the receivers <see cref="Plan"/> would keep — other
    /// than the donor, at most <see cref="DrainThreshold"/> samples — ordered by predicted work, then index. It is
    /// enumerated lazily and only as far as the plan needs.
    /// </summary>
    public IReadOnlyList<MovePlan> PlanDrained(InstanceLoad donor, IEnumerable<InstanceLoad> drained)
    {
        ArgumentNullException.ThrowIfNull(donor);
        ArgumentNullException.ThrowIfNull(drained);
        var plans = new List<MovePlan>();
        var remaining = donor.Samples.OrderByDescending(s => s.PredictedRemaining).ThenBy(s => s.SampleId).ToList();
        if (remaining.Count < 2) return plans;
        // While no plan is taken, the donor's side depends only on the receiver's work: kept for the next receiver
        // with the same work (at scale, thousands of drained instances with none).
        double donorWork = remaining.Sum(s => s.PredictedRemaining), lastReceiverWork = double.NaN;
        List<SampleLoad> chosen = [];
        double[] donorAfter = [];
        foreach (var receiver in drained)
        {
            if (remaining.Count < 2) break;
            double receiverWork = receiver.PredictedWork;
            double half = (donorWork - receiverWork) / 2;
            if (half <= 0) break; // receivers come least loaded first: no later one is below the donor either
            if (receiverWork != lastReceiverWork)
            {
                lastReceiverWork = receiverWork;
                chosen = [];
                double moved = 0;
                foreach (var s in remaining)
                {
                    if (chosen.Count >= remaining.Count - 1 || moved >= half) break;
                    if (Math.Abs(half - (moved + s.PredictedRemaining)) >= Math.Abs(half - moved)) continue;
                    chosen.Add(s);
                    moved += s.PredictedRemaining;
                }
                donorAfter = remaining.Where(s => !chosen.Contains(s)).Select(s => s.PredictedRemaining).ToArray();
            }
            if (chosen.Count == 0) continue;
            var receiverTime = receiver.StepTime.IsKnown ? receiver.StepTime : donor.StepTime;
            var receiverAfter = receiver.Samples.Concat(chosen).Select(s => s.PredictedRemaining).ToArray();
            double gain = !donor.StepTime.IsKnown ? double.NaN
                : Math.Max(donor.StepTime.Seconds(remaining.Select(s => s.PredictedRemaining)), receiverTime.Seconds(receiver.Samples.Select(s => s.PredictedRemaining)))
                  - Math.Max(donor.StepTime.Seconds(donorAfter), receiverTime.Seconds(receiverAfter)) - chosen.Sum(s => s.MoveSeconds);
            if (RequireGain && !(gain > 0)) continue;
            plans.Add(new MovePlan(donor.Instance, receiver.Instance, chosen.Select(s => s.SampleId).ToArray(), gain));
            remaining.RemoveAll(s => chosen.Contains(s));
            donorWork = remaining.Sum(s => s.PredictedRemaining);
            lastReceiverWork = double.NaN;
        }
        return plans;
    }
}
