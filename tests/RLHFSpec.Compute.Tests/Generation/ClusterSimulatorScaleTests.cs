using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Generation.Simulation;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Tests.Generation;

/// <summary>
/// The simulator's scaling work (issue 17 item 11) changes no result: small runs reproduce, bit for bit, what the
/// simulator gave before it (pinned), and the drained-instance tree the reallocator walks gives the plans that
/// <see cref="Reallocator.Plan"/> gives over every instance's load (the straightforward reference).
/// </summary>
public class ClusterSimulatorScaleTests
{
    /// <summary>A cost profile measured by <c>generate --cost-profile</c> on the 2-core CI machine (2026-12-06), as the CLI loads it.</summary>
    private const string Profile = """{"version": 1, "device": "cpu", "target_forward": {"tokens": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], "seconds": [0.0004529, 0.0003074, 0.0004081, 0.0007439, 0.0014038, 0.0025615, 0.0047956, 0.0080718, 0.0225298, 0, 0], "weights": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]}, "target_seconds_per_attended_pair": 0, "draft_forward": {"tokens": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], "seconds": [4.58e-05, 5.08e-05, 7.6e-05, 0.0001257, 0.0002299, 0.0003929, 0.0007984, 0.0015091, 0.003145, 0, 0], "weights": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]}, "suffix_seconds_per_sample": 0, "step_overhead": {"tokens": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], "seconds": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "weights": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}""";

    /// <summary>
    /// Completion time, migrations, recomputes, reassigned, KV bytes moved, steps, sample-steps and a hash of every
    /// instance's finish and busy seconds, computed by the simulator as of commit 0d91ea4 (before the drained-instance
    /// tree and the faster selector) on the workloads of <see cref="Scenarios"/>.
    /// </summary>
    private static readonly (string Name, string Fingerprint)[] Pinned =
    [
        ("n=8 threshold=0 reallocate=False", "0.13666875000000028 0 0 0 0 998 2047 f20754839ac359f1"),
        ("n=8 threshold=0 reallocate=True", "0.13666875000000028 3 0 0 3932160 1058 2026 8e260ae15dff7c82"),
        ("n=8 threshold=2 reallocate=True", "0.1209643000000004 2 0 0 1843200 1071 1993 a07caca6d79adaed"),
        ("n=100 threshold=0 reallocate=False", "0.16813712499999858 0 0 0 0 11096 25762 5fbc07ae2dde3295"),
        ("n=100 threshold=0 reallocate=True", "0.14418943720000013 30 0 0 81911808 12123 25220 5f2e3351c081a7b9"),
        ("n=100 threshold=2 reallocate=True", "0.12346855000000043 67 0 0 66625536 12194 24883 a1b420517d54b8d2"),
        ("n=300 threshold=0 reallocate=False", "0.1876413999999979 0 0 0 0 29281 72513 79d61e36b7bb72dd"),
        ("n=300 threshold=0 reallocate=True", "0.1531808 104 0 0 210542592 31694 71253 c751b3ce4ae322df"),
        ("n=300 threshold=2 reallocate=True", "0.12346855000000043 259 0 0 259473408 31912 70738 cb6941907cac2304"),
    ];

    /// <summary>The CLI's set-up (a loaded profile, the default candidates with a draft, default-task lengths), 10 samples per instance.</summary>
    private static IEnumerable<(string Name, string Fingerprint)> Scenarios()
    {
        var path = Path.GetTempFileName();
        CostModel cost;
        try
        {
            File.WriteAllText(path, Profile);
            cost = CostModel.Load(path);
        }
        finally { File.Delete(path); }
        var task = new ArithmeticTask(1);
        var pool = Enumerable.Range(0, 4096).Select(_ => task.Next()).Select(s => (s.Prompt.Length, s.ReferenceResponse.Length + 1)).ToList();
        foreach (int n in new[] { 8, 100, 300 })
            foreach (int threshold in new[] { 0, 2 })
                foreach (bool reallocate in new[] { false, true })
                {
                    if (!reallocate && threshold > 0) continue;
                    var random = new Random(1 + n);
                    var workload = Enumerable.Range(0, n * 10).Select(i =>
                    {
                        var (prompt, response) = pool[random.Next(pool.Count)];
                        int predicted = Math.Max(1, (int)(response * (0.5 + random.NextDouble())));
                        return new SimulatedSample(i, prompt, response, threshold == 0 ? response : predicted);
                    }).ToArray();
                    var selector = new StrategySelector(cost, new AcceptanceEstimator(), Generator.DefaultCandidates(hasDraft: true));
                    var r = new ClusterSimulator(cost, selector).Run(workload, new SimulationOptions
                    {
                        Instances = n, Reallocate = reallocate, DrainThreshold = threshold, AssignByPredictedLength = threshold > 0,
                    });
                    ulong hash = 14695981039346656037;
                    foreach (double x in r.InstanceFinishSeconds.Concat(r.InstanceBusySeconds))
                        hash = (hash ^ (ulong)BitConverter.DoubleToInt64Bits(x)) * 1099511628211;
                    yield return ($"n={n} threshold={threshold} reallocate={reallocate}",
                        FormattableString.Invariant($"{r.CompletionSeconds:R} {r.Migrations} {r.Recomputes} {r.Reassigned} {r.KvBytesMoved:R} {r.Steps} {r.SampleSteps} {hash:x16}"));
                }
    }

    [Test]
    public void SmallRunsGiveExactlyWhatTheSimulatorGaveBefore()
    {
        Assert.That(Scenarios().ToArray(), Is.EqualTo(Pinned));
    }

    /// <summary>The drained instances as a plain list, for the reference side of the tree test.</summary>
    private static InstanceLoad[] RandomLoads(Random random, int n, int threshold, ref long id)
    {
        var loads = new InstanceLoad[n];
        for (int k = 0; k < n; k++)
        {
            // Mostly empty instances (the end of a stage at scale), some loaded, step times spread around a common
            // value so that some receivers gain and others do not; a few never stepped.
            int count = random.Next(3) == 0 ? random.Next(0, threshold + 4) : 0;
            var samples = new SampleLoad[count];
            for (int s = 0; s < count; s++) samples[s] = new SampleLoad(id++, random.Next(1, 40) * 10.0, random.Next(3) == 0 ? 0 : random.NextDouble() * 2e-3);
            var time = random.Next(8) == 0 ? default
                : new StepTime(random.NextDouble() * (random.Next(2) == 0 ? 1e-3 : 1e-5), random.NextDouble() * 1e-4, 1 + random.NextDouble() * 2);
            loads[k] = new InstanceLoad(k, samples, time);
        }
        return loads;
    }

    [Test]
    public void TheDrainedTreeGivesThePlansOfAScanOverEveryInstance()
    {
        var random = new Random(17);
        int nonEmpty = 0, refused = 0;
        long id = 0;
        for (int trial = 0; trial < 2000; trial++)
        {
            int n = random.Next(2, 70), threshold = random.Next(0, 3);
            var loads = RandomLoads(random, n, threshold, ref id);
            var donor = loads[random.Next(n)];
            if (donor.Samples.Count < 2)
            {
                var samples = Enumerable.Range(0, random.Next(2, 12)).Select(_ => new SampleLoad(id++, random.Next(1, 80) * 10.0, random.NextDouble() * 1e-3)).ToArray();
                loads[donor.Instance] = donor = donor with { Samples = samples };
            }
            var drained = new DrainedInstances(n, k => loads[k]);
            foreach (var l in loads)
            {
                if (l.Instance == donor.Instance || l.Samples.Count > threshold) drained.Remove(l.Instance);
                else if (l.Samples.Count == 0) drained.SetEmpty(l.Instance, l.StepTime);
                else drained.SetLoaded(l.Instance, l.PredictedWork);
            }
            var reallocator = new Reallocator(threshold, requireGain: random.Next(4) != 0);
            var expected = reallocator.Plan(donor, loads);
            var actual = reallocator.PlanDrained(donor, drained);
            Assert.That(actual.Select(p => (p.From, p.To, string.Join(",", p.SampleIds), p.PredictedGainSeconds)),
                Is.EqualTo(expected.Select(p => (p.From, p.To, string.Join(",", p.SampleIds), p.PredictedGainSeconds))), $"trial {trial}");
            if (expected.Count > 0) nonEmpty++;
            else if (loads.Any(l => l.Instance != donor.Instance && l.Samples.Count == 0)) refused++;
        }
        Assert.That(nonEmpty, Is.GreaterThan(200), "trials where a plan is taken");
        Assert.That(refused, Is.GreaterThan(200), "trials where every empty instance is refused");
    }

    [Test]
    public void TheDrainedTreeFollowsChangesOfMembership()
    {
        // Instances enter and leave the empty and loaded groups in random order; the tree always returns the first
        // empty instance after the given index, as a scan would (no bound: underSeconds = ∞).
        var random = new Random(3);
        const int n = 37;
        var state = new int[n]; // 0: not drained, 1: empty, 2: loaded
        var loads = Enumerable.Range(0, n).Select(k => new InstanceLoad(k, [], new StepTime(1e-3, 1e-4, 1))).ToArray();
        var drained = new DrainedInstances(n, k => loads[k]);
        for (int step = 0; step < 3000; step++)
        {
            int k = random.Next(n);
            state[k] = random.Next(3);
            if (state[k] == 0) drained.Remove(k);
            else if (state[k] == 1) drained.SetEmpty(k, loads[k].StepTime);
            else drained.SetLoaded(k, 1 + k % 5);
            int after = random.Next(-1, n), donor = random.Next(n);
            int expected = Enumerable.Range(after + 1, Math.Max(0, n - after - 1)).Where(i => state[i] == 1 && i != donor).DefaultIfEmpty(-1).First();
            Assert.That(drained.NextEmpty(after, donor, 1, 1, double.PositiveInfinity, default)?.Instance ?? -1, Is.EqualTo(expected), $"step {step}");
            Assert.That(drained.Loaded.Select(l => l.Instance), Is.EqualTo(Enumerable.Range(0, n).Where(i => state[i] == 2).OrderBy(i => 1 + i % 5).ThenBy(i => i)));
        }
    }
}
