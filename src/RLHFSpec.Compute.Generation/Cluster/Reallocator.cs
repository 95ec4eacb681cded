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
        var planner = new DonorPlanner(this, donor);
        foreach (var receiver in drained)
            if (!planner.Offer(receiver)) break;
        return planner.Plans;
    }

    /// <summary>
    /// <see cref="Plan"/> over drained instances kept as <see cref="IDrainedReceivers"/>: the empty ones come first
    /// (least loaded, by index), and where the donor's side of a plan already rules out a gain, or no empty
    /// instance's step time could finish the chosen samples before the donor, they are skipped together. Same
    /// plans as <see cref="Plan"/> (the skips only drop receivers whose predicted gain cannot be positive).
    /// </summary>
    public IReadOnlyList<MovePlan> PlanDrained(InstanceLoad donor, IDrainedReceivers drained)
    {
        ArgumentNullException.ThrowIfNull(donor);
        ArgumentNullException.ThrowIfNull(drained);
        var planner = new DonorPlanner(this, donor);
        int after = -1;
        while (true)
        {
            if (planner.Exhausted || !planner.Prepare(0)) return planner.Plans; // no receiver at all is below the donor
            if (planner.NothingToMove) break;
            InstanceLoad? receiver;
            if (!RequireGain) receiver = drained.NextEmpty(after, donor.Instance, 0, 0, double.PositiveInfinity, donor.StepTime);
            else if (planner.DonorSideCanGain(out double longest, out double total, out double before))
                receiver = drained.NextEmpty(after, donor.Instance, longest, total, before, donor.StepTime);
            else break;
            if (receiver is null) break;
            after = receiver.Instance;
            planner.Offer(receiver);
        }
        foreach (var receiver in drained.Loaded)
            if (receiver.Instance != donor.Instance && !planner.Offer(receiver)) break;
        return planner.Plans;
    }

    /// <summary>The donor's side of <see cref="PlanDrained(InstanceLoad, IEnumerable{InstanceLoad})"/>, offered receivers least loaded first.</summary>
    private sealed class DonorPlanner
    {
        private readonly Reallocator _owner;
        private readonly InstanceLoad _donor;
        private readonly List<SampleLoad> _remaining;
        // While no plan is taken, the donor's side depends only on the receiver's work: kept for the next receiver
        // with the same work (at scale, thousands of drained instances with none).
        private double _donorWork, _lastReceiverWork = double.NaN;
        private List<SampleLoad> _chosen = [];
        private double[] _donorAfter = [];

        public DonorPlanner(Reallocator owner, InstanceLoad donor)
        {
            _owner = owner;
            _donor = donor;
            _remaining = donor.Samples.OrderByDescending(s => s.PredictedRemaining).ThenBy(s => s.SampleId).ToList();
            _donorWork = _remaining.Sum(s => s.PredictedRemaining);
        }

        public List<MovePlan> Plans { get; } = [];

        /// <summary>The donor keeps at least one sample.</summary>
        public bool Exhausted => _remaining.Count < 2;

        /// <summary>Nothing the prepared receiver work could take.</summary>
        public bool NothingToMove => _chosen.Count == 0;

        /// <summary>Chooses the samples for a receiver of <paramref name="receiverWork"/>; false when it (and every more loaded one) is not below the donor.</summary>
        public bool Prepare(double receiverWork)
        {
            double half = (_donorWork - receiverWork) / 2;
            if (half <= 0) return false;
            if (receiverWork != _lastReceiverWork)
            {
                _lastReceiverWork = receiverWork;
                _chosen = [];
                double moved = 0;
                foreach (var s in _remaining)
                {
                    if (_chosen.Count >= _remaining.Count - 1 || moved >= half) break;
                    if (Math.Abs(half - (moved + s.PredictedRemaining)) >= Math.Abs(half - moved)) continue;
                    _chosen.Add(s);
                    moved += s.PredictedRemaining;
                }
                _donorAfter = _remaining.Where(s => !_chosen.Contains(s)).Select(s => s.PredictedRemaining).ToArray();
            }
            return true;
        }

        /// <summary>
        /// What any receiver needs for a positive gain with the prepared samples, from the donor's side alone: false
        /// when none can gain (the donor's time after the move plus the moves is not below its time before, or its
        /// step time is unknown); else the chosen samples' longest and total predicted tokens and the donor's time
        /// before, which the receiver's time for them must be below. The gain is max(Db, Rb) − max(Da, Ra) − M with
        /// Ra ≥ Rb (rounding is monotone and every term is ≥ 0: step times with non-negative parts, as
        /// <see cref="StepTimeFit"/> gives, and non-negative predicted tokens), so a positive gain needs
        /// Db − Da − M &gt; 0 and Ra &lt; Db.
        /// </summary>
        public bool DonorSideCanGain(out double longest, out double total, out double before)
        {
            longest = total = 0;
            before = double.PositiveInfinity;
            if (!_donor.StepTime.IsKnown) return false; // the gain is NaN for every receiver
            if (_donor.StepTime.FixedSeconds < 0 || _donor.StepTime.SecondsPerSample < 0) return true; // no bound holds: skip nothing
            before = _donor.StepTime.Seconds(_remaining.Select(s => s.PredictedRemaining));
            double after = _donor.StepTime.Seconds(_donorAfter);
            if (!(before - after - _chosen.Sum(s => s.MoveSeconds) > 0)) return false;
            foreach (var s in _chosen)
            {
                longest = Math.Max(longest, s.PredictedRemaining);
                total += s.PredictedRemaining;
            }
            return true;
        }

        /// <summary>Offers one receiver (least loaded first); false when no later receiver can take anything either.</summary>
        public bool Offer(InstanceLoad receiver)
        {
            if (Exhausted) return false;
            if (!Prepare(receiver.PredictedWork)) return false; // receivers come least loaded first: no later one is below the donor either
            if (_chosen.Count == 0) return true;
            var receiverTime = receiver.StepTime.IsKnown ? receiver.StepTime : _donor.StepTime;
            var receiverAfter = receiver.Samples.Concat(_chosen).Select(s => s.PredictedRemaining).ToArray();
            double gain = !_donor.StepTime.IsKnown ? double.NaN
                : Math.Max(_donor.StepTime.Seconds(_remaining.Select(s => s.PredictedRemaining)), receiverTime.Seconds(receiver.Samples.Select(s => s.PredictedRemaining)))
                  - Math.Max(_donor.StepTime.Seconds(_donorAfter), receiverTime.Seconds(receiverAfter)) - _chosen.Sum(s => s.MoveSeconds);
            if (_owner.RequireGain && !(gain > 0)) return true;
            Plans.Add(new MovePlan(_donor.Instance, receiver.Instance, _chosen.Select(s => s.SampleId).ToArray(), gain));
            var chosen = _chosen;
            _remaining.RemoveAll(s => chosen.Contains(s));
            _donorWork = _remaining.Sum(s => s.PredictedRemaining);
            _lastReceiverWork = double.NaN;
            return true;
        }
    }
}
