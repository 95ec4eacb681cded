using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Generation.Simulation;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Generation;

public class ClusterSimulatorTests
{
    private static ClusterSimulator Simulator(Action<InstanceLoad, IReadOnlyList<InstanceLoad>, IReadOnlyList<MovePlan>>? onPlan = null)
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 4, 16, 64, 256, 1024 })
        {
            cost.ObserveVerify(n, 0, 2e-3 + 4e-6 * n);
            cost.ObserveDraftForward(n, 3e-4 + 1e-6 * n);
        }
        var acceptance = new AcceptanceEstimator(forgetting: 1);
        for (int i = 0; i < 200; i++) acceptance.Observe(10_000 + i, Strategy.Parse("chain:4"), 4, i % 5);
        var selector = new StrategySelector(cost, acceptance, [Strategy.Parse("chain:2"), Strategy.Parse("chain:4")]);
        return new ClusterSimulator(cost, selector) { OnPlan = onPlan };
    }

    private static SimulatedSample[] LongTail(int count, int seed)
    {
        var task = new ArithmeticTask(seed);
        return Enumerable.Range(0, count).Select(i =>
        {
            int length = task.Next().ReferenceResponse.Length + 1;
            return new SimulatedSample(i, 20, length, length);
        }).ToArray();
    }

    [Test]
    public void EverySampleCompletesAndOneInstanceNeverMigrates()
    {
        var workload = LongTail(200, seed: 1);
        var sim = Simulator();
        var a = sim.Run(workload, new SimulationOptions { Instances = 1, Reallocate = false });
        var b = sim.Run(workload, new SimulationOptions { Instances = 1, Reallocate = true });
        Assert.That(a.Tokens, Is.EqualTo(workload.Sum(s => (long)s.ResponseTokens)));
        Assert.That(b.CompletionSeconds, Is.EqualTo(a.CompletionSeconds));
        Assert.That(b.Migrations + b.Recomputes, Is.EqualTo(0));
        Assert.That(a.InstanceBusySeconds[0], Is.EqualTo(a.CompletionSeconds).Within(1e-9), "one instance is never idle");
    }

    [Test]
    public void ReallocationShortensAStragglerBoundStage()
    {
        // Round-robin puts every long sample on instance 0 and every short one on instance 1.
        var workload = Enumerable.Range(0, 32).Select(i => new SimulatedSample(i, 20, i % 2 == 0 ? 600 : 20, i % 2 == 0 ? 600 : 20)).ToArray();
        var sim = Simulator();
        var staticRun = sim.Run(workload, new SimulationOptions { Instances = 2 });
        var moving = sim.Run(workload, new SimulationOptions { Instances = 2, Reallocate = true });
        Assert.That(moving.Migrations + moving.Recomputes, Is.GreaterThan(0));
        Assert.That(moving.CompletionSeconds, Is.LessThan(staticRun.CompletionSeconds));
        Assert.That(moving.Tokens, Is.EqualTo(staticRun.Tokens));
        Assert.That(staticRun.InstanceFinishSeconds[1], Is.LessThan(staticRun.InstanceFinishSeconds[0] / 3), "statically, instance 1 idles most of the stage");
    }

    [Test]
    public void BalancedWorkloadsMoveNothing()
    {
        var workload = Enumerable.Range(0, 64).Select(i => new SimulatedSample(i, 20, 100, 100)).ToArray();
        var result = Simulator().Run(workload, new SimulationOptions { Instances = 4, Reallocate = true });
        Assert.That(result.Migrations + result.Recomputes, Is.EqualTo(0));
    }

    [Test]
    public void AssignmentByPredictedLengthBalancesTheLoad()
    {
        var workload = LongTail(256, seed: 3);
        var sim = Simulator();
        var roundRobin = sim.Run(workload, new SimulationOptions { Instances = 4 });
        var byLength = sim.Run(workload, new SimulationOptions { Instances = 4, AssignByPredictedLength = true });
        double Spread(SimulationResult r) => r.InstanceBusySeconds.Max() - r.InstanceBusySeconds.Min();
        Assert.That(Spread(byLength), Is.LessThanOrEqualTo(Spread(roundRobin)));
    }

    private static SimulatedSample[] Random(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(i =>
        {
            int length = random.Next(4) == 0 ? random.Next(200, 800) : random.Next(5, 60);
            int predicted = Math.Max(1, (int)(length * (0.5 + random.NextDouble())));
            return new SimulatedSample(i, random.Next(5, 40), length, predicted);
        }).ToArray();
    }

    [Test]
    public void TheSimulatorsMovesAreExactlyWhatTheReallocatorPlans([Values(0, 1, 2)] int drainThreshold, [Values] bool requireGain)
    {
        int plansChecked = 0, moves = 0;
        for (int seed = 0; seed < 6; seed++)
        {
            var sim = Simulator((donor, all, carriedOut) =>
            {
                var expected = new Reallocator(drainThreshold, requireGain).Plan(donor, all);
                Assert.That(carriedOut.Select(p => (p.From, p.To, string.Join(",", p.SampleIds), p.PredictedGainSeconds)),
                    Is.EqualTo(expected.Select(p => (p.From, p.To, string.Join(",", p.SampleIds), p.PredictedGainSeconds))), $"seed {seed}");
                plansChecked++;
                moves += carriedOut.Sum(p => p.SampleIds.Count);
            });
            var workload = Random(40 + 20 * seed, seed);
            var options = new SimulationOptions { Instances = 2 + seed, Reallocate = true, DrainThreshold = drainThreshold, RequireGain = requireGain, AssignByPredictedLength = seed % 2 == 0 };
            var result = sim.Run(workload, options);
            Assert.That(result.Tokens, Is.EqualTo(workload.Sum(s => (long)s.ResponseTokens)));
        }
        Assert.That(plansChecked, Is.GreaterThan(0));
        Assert.That(moves, Is.GreaterThan(0), "the fleets were meant to need moves");
    }

    [Test]
    public void PlanDrainedOverTheOrderedDrainedInstancesEqualsPlan()
    {
        var random = new Random(5);
        int nonEmpty = 0;
        for (int trial = 0; trial < 500; trial++)
        {
            int n = random.Next(2, 9), threshold = random.Next(0, 3);
            long id = 0;
            var loads = Enumerable.Range(0, n).Select(k => new InstanceLoad(k,
                Enumerable.Range(0, random.Next(0, 7)).Select(_ => new SampleLoad(id++, random.Next(1, 40) * 10.0, random.NextDouble() * 1e-3)).ToArray(),
                random.Next(4) == 0 ? default : new StepTime(random.NextDouble() * 1e-3, random.NextDouble() * 1e-3, 1 + random.NextDouble()))).ToArray();
            var donor = loads[random.Next(n)];
            var reallocator = new Reallocator(threshold, requireGain: random.Next(2) == 0);
            var drained = loads.Where(l => l.Instance != donor.Instance && l.Samples.Count <= threshold).OrderBy(l => l.PredictedWork).ThenBy(l => l.Instance);
            var a = reallocator.Plan(donor, loads);
            var b = reallocator.PlanDrained(donor, drained);
            Assert.That(b.Select(p => (p.From, p.To, string.Join(",", p.SampleIds))), Is.EqualTo(a.Select(p => (p.From, p.To, string.Join(",", p.SampleIds)))), $"trial {trial}");
            if (a.Count > 0) nonEmpty++;
        }
        Assert.That(nonEmpty, Is.GreaterThan(20));
    }

    [Test]
    public void MoveCostPicksTheWayTheClusterPicks()
    {
        Assert.That(MoveCost.PrefersCopy(MigrationMode.Auto, 1, 2), Is.True);
        Assert.That(MoveCost.PrefersCopy(MigrationMode.Auto, 2, 1), Is.False);
        Assert.That(MoveCost.PrefersCopy(MigrationMode.Auto, double.PositiveInfinity, 1), Is.False, "a model that cannot copy recomputes");
        Assert.That(MoveCost.PrefersCopy(MigrationMode.Copy, 5, 1), Is.True);
        Assert.That(MoveCost.PrefersCopy(MigrationMode.Copy, double.PositiveInfinity, 1), Is.False);
        Assert.That(MoveCost.PrefersCopy(MigrationMode.Recompute, 0, 1), Is.False);
        Assert.That(MoveCost.Seconds(MigrationMode.Auto, 3, 2), Is.EqualTo(2));
        Assert.That(MoveCost.Seconds(MigrationMode.Copy, 3, 2), Is.EqualTo(3));
        Assert.That(MoveCost.CopySeconds(2e9, 1e9, 0.5), Is.EqualTo(2.5));
        Assert.That(MoveCost.RecomputeSeconds(101, 1e4), Is.EqualTo(0.01).Within(1e-12), "the last token is fed by the next step");
    }

    [Test]
    public void TheSimulatorCopiesOrRecomputesAsTheMoveCostSays()
    {
        var workload = Enumerable.Range(0, 32).Select(i => new SimulatedSample(i, 20, i % 2 == 0 ? 600 : 20, i % 2 == 0 ? 600 : 20)).ToArray();
        SimulationResult Run(MigrationMode mode, double bytesPerSecond) => Simulator().Run(workload,
            new SimulationOptions { Instances = 2, Reallocate = true, RequireGain = false, Migration = mode, MigrationBytesPerSecond = bytesPerSecond });
        var copy = Run(MigrationMode.Copy, 10e9);
        Assert.That(copy.Migrations, Is.GreaterThan(0));
        Assert.That(copy.Recomputes, Is.EqualTo(0));
        Assert.That(copy.KvBytesMoved, Is.GreaterThan(0));
        var recompute = Run(MigrationMode.Recompute, 10e9);
        Assert.That(recompute.Recomputes, Is.GreaterThan(0));
        Assert.That(recompute.Migrations, Is.EqualTo(0));
        var slowLink = Run(MigrationMode.Auto, 1); // 1 byte/s: a copy never pays
        Assert.That(slowLink.Recomputes, Is.GreaterThan(0));
        Assert.That(slowLink.Migrations, Is.EqualTo(0));
        var fastLink = Run(MigrationMode.Auto, 1e15);
        Assert.That(fastLink.Migrations, Is.GreaterThan(0));
        Assert.That(fastLink.Recomputes, Is.EqualTo(0));
    }

    [Test]
    public void SeededRunsAreDeterministic([Values] bool reallocate)
    {
        var workload = Random(300, seed: 11);
        var options = new SimulationOptions { Instances = 6, Reallocate = reallocate, AssignByPredictedLength = true };
        var a = Simulator().Run(workload, options);
        var b = Simulator().Run(workload, options);
        Assert.That(b.CompletionSeconds, Is.EqualTo(a.CompletionSeconds));
        Assert.That(b.InstanceFinishSeconds, Is.EqualTo(a.InstanceFinishSeconds));
        Assert.That(b.InstanceBusySeconds, Is.EqualTo(a.InstanceBusySeconds));
        Assert.That((b.Migrations, b.Recomputes, b.Reassigned, b.Steps, b.SampleSteps), Is.EqualTo((a.Migrations, a.Recomputes, a.Reassigned, a.Steps, a.SampleSteps)));
    }
}
