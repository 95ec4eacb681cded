using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Generation.Simulation;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Tests.Generation;

public class ClusterSimulatorTests
{
    private static ClusterSimulator Simulator()
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
        return new ClusterSimulator(cost, selector);
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
}
