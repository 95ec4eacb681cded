using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Generation;

/// <summary>The two planners behind <see cref="IStepPlanner"/> give what the step loop's two branches gave before.</summary>
public class StepPlannerTests
{
    [TestCase("chain:4")]
    [TestCase("tree:3,2,6")]
    [TestCase("suffix:8")]
    [TestCase("suffix-tree:6,2,12")]
    public void AFixedStrategyDraftsItsDepthOrOneLessThanTheTokensLeft(string text)
    {
        var strategy = Strategy.Parse(text);
        var planner = new FixedStrategyPlanner(strategy);
        var samples = new[] { new LiveSample(1, 10, 100), new LiveSample(2, 10, 3), new LiveSample(3, 10, 1), new LiveSample(4, 10, strategy.Depth + 1) };
        var plan = planner.Plan(samples);
        Assert.That(plan.Strategy, Is.EqualTo(strategy));
        Assert.That(plan.DraftDepths, Is.EqualTo(samples.Select(s => Math.Min(strategy.Depth, s.RemainingTokens - 1)).ToArray()));
        Assert.That(planner.Strategies, Is.EqualTo(new[] { strategy }));
        Assert.That(planner.Adaptive, Is.False);
    }

    [Test]
    public void OffDraftsNothing()
    {
        var plan = new FixedStrategyPlanner(Strategy.Off).Plan([new LiveSample(1, 10, 100), new LiveSample(2, 10, 1)]);
        Assert.That(plan.Strategy.IsOff);
        Assert.That(plan.DraftDepths, Is.EqualTo(new[] { 0, 0 }));
    }

    [Test]
    public void TheSelectorAsAPlannerIsItsChoice()
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 2, 4, 8, 16, 32, 64 }) { cost.ObserveVerify(n, 0, 0.004 + 0.0005 * n); cost.ObserveDraftForward(n, 0.0001 * n); }
        var estimator = new AcceptanceEstimator(forgetting: 1);
        for (int i = 0; i < 500; i++) estimator.Observe(i % 4, Strategy.Parse("chain:4"), 4, i % 5);
        var candidates = new[] { Strategy.Parse("chain:2"), Strategy.Parse("chain:4"), Strategy.Parse("suffix:4") };
        var selector = new StrategySelector(cost, estimator, candidates);
        IStepPlanner planner = selector;
        Assert.That(planner.Adaptive);
        Assert.That(planner.Strategies, Is.EqualTo(selector.Candidates));
        foreach (int batch in new[] { 1, 3, 16, 64 })
        {
            var samples = Enumerable.Range(0, batch).Select(i => new LiveSample(i, 20 + i, 5 + 7 * i)).ToArray();
            var expected = selector.Choose(samples);
            var actual = planner.Plan(samples);
            Assert.That(actual.Strategy, Is.EqualTo(expected.Strategy), $"batch {batch}");
            Assert.That(actual.DraftDepths, Is.EqualTo(expected.DraftDepths), $"batch {batch}");
            Assert.That(actual.PredictedSeconds, Is.EqualTo(expected.PredictedSeconds), $"batch {batch}");
        }
    }
}

/// <summary><see cref="StrategyMode"/>: parsed once where text comes in, printed back as it was written.</summary>
public class StrategyModeTests
{
    [TestCase("adaptive")]
    [TestCase("off")]
    [TestCase("chain:4")]
    [TestCase("suffix-tree:6,2,12")]
    public void ModesRoundTripThroughTheirStrings(string text) =>
        Assert.That(StrategyMode.Parse(text).ToString(), Is.EqualTo(text));

    [Test]
    public void AdaptiveIsNotAFixedStrategy()
    {
        Assert.That(StrategyMode.Parse(" Adaptive ").IsAdaptive);
        Assert.That(StrategyMode.Parse("off").IsAdaptive, Is.False);
        Assert.That(StrategyMode.Parse("tree:3,2,6").Fixed, Is.EqualTo(Strategy.Parse("tree:3,2,6")));
        Assert.That(StrategyMode.Of(Strategy.Off), Is.EqualTo(StrategyMode.Parse("off")));
    }

    [Test]
    public void ABadModeNamesTheOptionAndTheValue()
    {
        var e = Assert.Throws<ArgumentException>(() => StrategyMode.Parse("adaptiv", "--strategy"))!;
        Assert.That(e.Message, Does.Contain("--strategy").And.Contain("adaptiv"));
        // Where adaptive is accepted, the error lists it among what is expected; a range error keeps its own message.
        Assert.That(e.Message, Does.Contain("expected adaptive, off,"));
        var range = Assert.Throws<ArgumentException>(() => StrategyMode.Parse("chain:0", "--strategy"))!;
        Assert.That(range.Message, Does.Contain("depth"));
    }
}
