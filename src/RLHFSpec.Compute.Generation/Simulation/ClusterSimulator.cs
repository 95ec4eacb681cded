using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Selection;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// Discrete-event simulation of a generation stage on N instances, driven by the measured cost model and the
/// acceptance statistics through the same <see cref="StrategySelector"/> the real instances use: each step of an
/// instance takes the selector's predicted seconds for its live batch, and each sample advances by its expected
/// emitted tokens. Samples start with a static assignment (round-robin, or by predicted length). With reallocation,
/// after each step the stepped instance is offered as donor to the same <see cref="Reallocator"/> the real
/// <see cref="GenerationCluster"/> runs at its step boundaries, with loads built as the cluster builds them (each
/// instance's step time fitted by a <see cref="StepTimeFit"/> to its simulated steps, each live sample's move cost by
/// <see cref="MoveCost"/> under <see cref="SimulationOptions.Migration"/>); moved samples reach the receiver after
/// their copies or re-prefills. Only time is simulated.
/// <para>Scale: the next instance to step comes from a priority queue of step-completion times, and the drained
/// instances are kept as <see cref="DrainedInstances"/> for <see cref="Reallocator.PlanDrained(InstanceLoad, IDrainedReceivers)"/>
/// (the empty ones in a tree that rules out, a subtree at a time, those too slow to gain from a plan), so an event
/// costs O(log N) plus the donor's samples, not a scan of all N instances.</para>
/// </summary>
public sealed class ClusterSimulator(CostModel cost, StrategySelector selector)
{
    private sealed class Live(SimulatedSample sample)
    {
        public SimulatedSample Sample { get; } = sample;
        public double Generated;
        public double Remaining => Sample.ResponseTokens - Generated;
        public double PredictedRemaining => Math.Max(1, Sample.PredictedTokens - Generated);
        public int Context => Sample.PromptTokens + (int)Generated;
    }

    private sealed class Instance(int index)
    {
        public int Index { get; } = index;
        public double Clock, Busy, Emitted;
        public long Steps, SampleSteps;
        public int Version;               // of its entry in the event queue; older entries are stale
        public InstanceLoad? ReceiverLoad;           // its load as a receiver, until it changes
        public readonly StepTimeFit StepTime = new();
        public readonly List<Live> Live = new();
        public readonly List<Live> Waiting = new(); // admitted in order
        public int Count => Live.Count + Waiting.Count;

        public double PredictedWork()
        {
            double work = 0;
            foreach (var x in Live) work += x.PredictedRemaining;
            foreach (var x in Waiting) work += x.PredictedRemaining;
            return work;
        }
    }

    /// <summary>
    /// Called, when set, at every reallocation with the donor's load, every instance's load (built for the call: O(N))
    /// and the plans the simulator carried out — for tests that check them against <see cref="Reallocator.Plan"/>.
    /// </summary>
    public Action<InstanceLoad, IReadOnlyList<InstanceLoad>, IReadOnlyList<MovePlan>>? OnPlan { get; init; }

    /// <summary>Called, when set, with (samples finished, samples in all) as the run goes on (a progress bar).</summary>
    public Action<long, long>? OnProgress { get; init; }

    public SimulationResult Run(IReadOnlyList<SimulatedSample> workload, SimulationOptions options)
    {
        ArgumentNullException.ThrowIfNull(workload);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Instances < 1) throw new ArgumentOutOfRangeException(nameof(options), $"instances {options.Instances}: must be >= 1");
        var instances = Enumerable.Range(0, options.Instances).Select(k => new Instance(k)).ToArray();
        Assign(workload, instances, options);
        var reallocator = new Reallocator(options.DrainThreshold, options.RequireGain);
        var memo = new StepMemo();
        var events = new PriorityQueue<Instance, (double Clock, int Index, int Version)>(Comparer<(double Clock, int Index, int Version)>.Create((a, b) =>
            a.Clock != b.Clock ? a.Clock.CompareTo(b.Clock) : a.Index.CompareTo(b.Index)));
        var drained = new DrainedInstances(instances.Length, k => instances[k].ReceiverLoad ??= Load(instances[k], donor: false, options));
        void Schedule(Instance i)
        {
            i.Version++;
            if (i.Count > 0) events.Enqueue(i, (i.Clock, i.Index, i.Version));
        }
        void Touch(Instance i)
        {
            if (!options.Reallocate) return;
            i.ReceiverLoad = null;
            if (i.Count > options.DrainThreshold) drained.Remove(i.Index);
            else if (i.Count == 0) drained.SetEmpty(i.Index, StepTimeOf(i));
            else drained.SetLoaded(i.Index, i.PredictedWork());
        }
        foreach (var i in instances)
        {
            Schedule(i);
            Touch(i);
        }
        int migrations = 0, recomputes = 0, reassigned = 0;
        long finished = 0, total = workload.Count;
        double bytesMoved = 0;
        var finish = new double[instances.Length];
        OnProgress?.Invoke(0, total);
        while (events.TryDequeue(out var next, out var entry))
        {
            if (entry.Version != next.Version) continue;
            int before = next.Count;
            Step(next, options, memo);
            if (next.Count < before)
            {
                finished += before - next.Count;
                OnProgress?.Invoke(finished, total);
            }
            if (next.Count == 0) finish[next.Index] = next.Clock;
            if (options.Reallocate && next.Count >= 2)
            {
                var donorLoad = Load(next, donor: true, options);
                var plans = reallocator.PlanDrained(donorLoad, drained);
                OnPlan?.Invoke(donorLoad, instances.Select(i => Load(i, donor: i == next, options)).ToArray(), plans);
                foreach (var plan in plans)
                {
                    var receiver = instances[plan.To];
                    double arrival = Math.Max(receiver.Clock, next.Clock);
                    foreach (long id in plan.SampleIds)
                    {
                        var x = TakeOut(next, id);
                        if (x.Generated == 0) reassigned++; // not prefilled yet: the receiver prefills it on admission
                        else
                        {
                            double copy = CopySeconds(x, options), recompute = RecomputeSeconds(x, options);
                            if (MoveCost.PrefersCopy(options.Migration, copy, recompute))
                            {
                                migrations++;
                                bytesMoved += x.Context * options.KvBytesPerToken;
                            }
                            else recomputes++;
                            arrival += MoveCost.Seconds(options.Migration, copy, recompute);
                        }
                        receiver.Waiting.Add(x);
                    }
                    receiver.Clock = arrival;
                    Schedule(receiver);
                    Touch(receiver);
                }
            }
            Schedule(next);
            Touch(next);
        }
        for (int i = 0; i < instances.Length; i++) finish[i] = Math.Max(finish[i], instances[i].Clock);
        return new SimulationResult(finish.Max(), finish, instances.Select(i => i.Busy).ToArray(), migrations, recomputes, bytesMoved,
            workload.Sum(s => (long)s.ResponseTokens), instances.Sum(i => i.Steps), instances.Sum(i => i.SampleSteps))
        { Reassigned = reassigned };
    }

    /// <summary>An instance's load as <see cref="GenerationCluster"/> builds it for the reallocator.</summary>
    private InstanceLoad Load(Instance i, bool donor, SimulationOptions options)
    {
        var samples = new SampleLoad[i.Count];
        int k = 0;
        foreach (var x in i.Live.Concat(i.Waiting))
            samples[k++] = new SampleLoad(x.Sample.Id, x.PredictedRemaining, donor ? MoveSeconds(x, options) : 0);
        return new InstanceLoad(i.Index, samples, StepTimeOf(i));
    }

    private static StepTime StepTimeOf(Instance i) => i.StepTime.Current(i.SampleSteps > 0 ? i.Emitted / i.SampleSteps : 0);

    private static Live TakeOut(Instance i, long id)
    {
        int k = i.Live.FindIndex(x => x.Sample.Id == id);
        if (k >= 0)
        {
            var x = i.Live[k];
            i.Live.RemoveAt(k);
            return x;
        }
        k = i.Waiting.FindIndex(x => x.Sample.Id == id);
        if (k < 0) throw new InvalidOperationException($"sample {id} is not on instance {i.Index}");
        var w = i.Waiting[k];
        i.Waiting.RemoveAt(k);
        return w;
    }

    private static double CopySeconds(Live x, SimulationOptions options) =>
        MoveCost.CopySeconds(x.Context * options.KvBytesPerToken, options.MigrationBytesPerSecond, options.MigrationLatencySeconds);

    /// <summary>Re-prefill at the measured prefill rate when there is one, else as the cost model times a prefill of the context.</summary>
    private double RecomputeSeconds(Live x, SimulationOptions options) => options.PrefillSecondsPerToken > 0
        ? MoveCost.RecomputeSeconds(x.Context, 1 / options.PrefillSecondsPerToken)
        : cost.VerifySeconds(x.Context, (double)x.Context * x.Context / 2);

    /// <summary>Nothing for a sample not prefilled yet (its prefill is due anyway), as in the cluster.</summary>
    private double MoveSeconds(Live x, SimulationOptions options) =>
        x.Generated == 0 ? 0 : MoveCost.Seconds(options.Migration, CopySeconds(x, options), RecomputeSeconds(x, options));

    private static void Assign(IReadOnlyList<SimulatedSample> workload, Instance[] instances, SimulationOptions options)
    {
        if (options.AssignByPredictedLength)
        {
            // Longest predicted first onto the least loaded (ties: lowest index), as the cluster assigns.
            var load = new PriorityQueue<Instance, (double Work, int Index)>();
            foreach (var i in instances) load.Enqueue(i, (0, i.Index));
            foreach (var s in workload.OrderByDescending(s => s.PredictedTokens))
            {
                load.TryDequeue(out var target, out var key);
                var x = new Live(s);
                target!.Waiting.Add(x);
                load.Enqueue(target, (key.Work + x.PredictedRemaining, key.Index));
            }
            return;
        }
        for (int k = 0; k < workload.Count; k++) instances[k % instances.Length].Waiting.Add(new Live(workload[k]));
    }

    /// <summary>The selector's choice for a batch: its predicted seconds and each sample's expected tokens.</summary>
    private StepMemo.Outcome Choose(LiveSample[] views)
    {
        var plan = selector.Choose(views);
        var (_, seconds) = selector.Predict(plan.Strategy, views, plan.DraftDepths);
        var tokens = new double[views.Length];
        for (int k = 0; k < views.Length; k++) tokens[k] = selector.ExpectedTokens(plan.Strategy, views[k], plan.DraftDepths[k]);
        return new StepMemo.Outcome(seconds, tokens);
    }

    private void Step(Instance instance, SimulationOptions options, StepMemo memo)
    {
        int prefillTokens = 0; // of fresh samples: a moved one's copy or re-prefill was paid when it moved
        int admit = 0;
        while (instance.Live.Count < options.MaxBatch && admit < instance.Waiting.Count)
        {
            var admitted = instance.Waiting[admit++];
            if (admitted.Generated == 0) prefillTokens += admitted.Sample.PromptTokens;
            instance.Live.Add(admitted);
        }
        instance.Waiting.RemoveRange(0, admit);
        var views = new LiveSample[instance.Live.Count];
        for (int k = 0; k < views.Length; k++)
        {
            var x = instance.Live[k];
            views[k] = new LiveSample(x.Sample.Id, x.Context, (int)Math.Ceiling(x.Remaining));
        }
        var outcome = memo.Get(views, selector, Choose);
        double seconds = outcome.Seconds + (options.StepOverheadSeconds + options.PrefillSecondsPerToken * prefillTokens);
        double emitted = 0;
        for (int k = 0; k < views.Length; k++)
        {
            double tokens = outcome.Tokens[k];
            instance.Live[k].Generated += tokens;
            emitted += tokens;
        }
        instance.StepTime.Observe(views.Length, seconds);
        instance.Emitted += emitted;
        instance.Clock += seconds;
        instance.Busy += seconds;
        instance.Steps++;
        instance.SampleSteps += views.Length;
        instance.Live.RemoveAll(x => x.Remaining <= 1e-9);
    }
}
