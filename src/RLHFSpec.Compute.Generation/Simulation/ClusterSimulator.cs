using RLHFSpec.Compute.Generation.Selection;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// Discrete-event simulation of a generation stage on N instances, driven by the measured cost model and the
/// acceptance statistics through the same <see cref="StrategySelector"/> the real instances use: each step of an
/// instance takes the selector's predicted seconds for its live batch, and each sample advances by its expected
/// emitted tokens. Samples start with a static assignment (round-robin, or by predicted length); with reallocation
/// an instance that drains takes half of the most loaded instance's remaining work, each moved sample costing a KV
/// copy or a re-prefill, whichever the cost model says is cheaper. It answers what the 2-core machine cannot run:
/// completion time at 4–64 instances with and without reallocation.
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

    private sealed class Instance
    {
        public double Clock, Busy;
        public long Steps, SampleSteps;
        public double SecondsPerToken; // of its last step: what its remaining work costs at its current rate
        public readonly List<Live> Live = new();
        public readonly Queue<Live> Waiting = new();
        public int Count => Live.Count + Waiting.Count;
        public double PredictedWork => Live.Concat(Waiting).Sum(x => x.PredictedRemaining);
    }

    public SimulationResult Run(IReadOnlyList<SimulatedSample> workload, SimulationOptions options)
    {
        if (options.Instances < 1) throw new ArgumentOutOfRangeException(nameof(options), $"instances {options.Instances}: must be >= 1");
        var instances = Enumerable.Range(0, options.Instances).Select(_ => new Instance()).ToArray();
        Assign(workload, instances, options);
        int migrations = 0, recomputes = 0;
        double bytesMoved = 0;
        var finish = new double[instances.Length];
        while (true)
        {
            var next = instances.Where(i => i.Count > 0).MinBy(i => i.Clock);
            if (next is null) break;
            Step(next, options);
            if (next.Count == 0) finish[Array.IndexOf(instances, next)] = next.Clock;
            if (!options.Reallocate) continue;
            foreach (var idle in instances.Where(i => i.Count <= options.DrainThreshold))
            {
                var donor = instances.Where(i => i != idle && i.Count >= 2).MaxBy(i => i.PredictedWork);
                if (donor is null) break;
                double start = Math.Max(idle.Clock, donor.Clock);
                // Move the samples with the most predicted work left until the two hold about the same.
                var candidates = donor.Live.Concat(donor.Waiting).OrderByDescending(x => x.PredictedRemaining).ToList();
                double target = donor.PredictedWork / 2, moved = 0;
                var toMove = new List<Live>();
                foreach (var x in candidates)
                {
                    if (toMove.Count >= donor.Count - 1 || moved >= target) break;
                    toMove.Add(x);
                    moved += x.PredictedRemaining;
                }
                if (toMove.Count == 0) continue;
                // Move only when the imbalance costs more than the move: the donor's remaining time at its current
                // rate must shrink by more than the moves take.
                double moveCost = toMove.Sum(x => MoveSeconds(x, options));
                if (donor.SecondsPerToken * moved <= moveCost) continue;
                double arrival = start;
                foreach (var x in toMove)
                {
                    if (RecomputeSeconds(x) < CopySeconds(x, options)) recomputes++; else { migrations++; bytesMoved += x.Context * options.KvBytesPerToken; }
                    arrival += MoveSeconds(x, options);
                    if (!donor.Live.Remove(x)) RemoveFromQueue(donor.Waiting, x);
                    idle.Waiting.Enqueue(x);
                }
                idle.Clock = arrival;
            }
        }
        for (int i = 0; i < instances.Length; i++) finish[i] = Math.Max(finish[i], instances[i].Clock);
        return new SimulationResult(finish.Max(), finish, instances.Select(i => i.Busy).ToArray(), migrations, recomputes, bytesMoved,
            workload.Sum(s => (long)s.ResponseTokens), instances.Sum(i => i.Steps), instances.Sum(i => i.SampleSteps));
    }

    private static double CopySeconds(Live x, SimulationOptions options) =>
        options.MigrationLatencySeconds + x.Context * options.KvBytesPerToken / options.MigrationBytesPerSecond;

    private double RecomputeSeconds(Live x) => cost.VerifySeconds(x.Context, (double)x.Context * x.Context / 2);

    private double MoveSeconds(Live x, SimulationOptions options) => Math.Min(CopySeconds(x, options), RecomputeSeconds(x));

    private static void Assign(IReadOnlyList<SimulatedSample> workload, Instance[] instances, SimulationOptions options)
    {
        if (options.AssignByPredictedLength)
        {
            foreach (var s in workload.OrderByDescending(s => s.PredictedTokens))
                instances.MinBy(i => i.PredictedWork)!.Waiting.Enqueue(new Live(s));
            return;
        }
        for (int k = 0; k < workload.Count; k++) instances[k % instances.Length].Waiting.Enqueue(new Live(workload[k]));
    }

    private void Step(Instance instance, SimulationOptions options)
    {
        int prefillTokens = 0; // of fresh samples: a moved one's copy or re-prefill was paid when it moved
        while (instance.Live.Count < options.MaxBatch && instance.Waiting.Count > 0)
        {
            var admitted = instance.Waiting.Dequeue();
            if (admitted.Generated == 0) prefillTokens += admitted.Sample.PromptTokens;
            instance.Live.Add(admitted);
        }
        var views = instance.Live.Select(x => new LiveSample(x.Sample.Id, x.Context, (int)Math.Ceiling(x.Remaining))).ToArray();
        var plan = selector.Choose(views);
        var (_, seconds) = selector.Predict(plan.Strategy, views, plan.DraftDepths);
        seconds += options.StepOverheadSeconds + options.PrefillSecondsPerToken * prefillTokens;
        double emitted = 0;
        for (int k = 0; k < views.Length; k++)
        {
            double tokens = selector.ExpectedTokens(plan.Strategy, views[k], plan.DraftDepths[k]);
            instance.Live[k].Generated += tokens;
            emitted += tokens;
        }
        instance.SecondsPerToken = emitted > 0 ? seconds / emitted : 0;
        instance.Clock += seconds;
        instance.Busy += seconds;
        instance.Steps++;
        instance.SampleSteps += views.Length;
        instance.Live.RemoveAll(x => x.Remaining <= 1e-9);
    }

    private static void RemoveFromQueue(Queue<Live> queue, Live item)
    {
        var rest = queue.Where(x => x != item).ToList();
        queue.Clear();
        foreach (var x in rest) queue.Enqueue(x);
    }
}
