using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Generation;

public class SelectionTests
{
    [TestCase("off")]
    [TestCase("chain:4")]
    [TestCase("tree:5,3,24")]
    [TestCase("suffix:16")]
    [TestCase("suffix-tree:8,2,32")]
    public void StrategiesRoundTripThroughTheirStrings(string text) =>
        Assert.That(Strategy.Parse(text).ToString(), Is.EqualTo(text));

    [TestCase("chain")]
    [TestCase("chain:0")]
    [TestCase("chain:x")]
    [TestCase("tree:4,2")]
    [TestCase("tree:8,2,4")]
    [TestCase("chain:65")]
    [TestCase("beam:3")]
    [TestCase("chain:-1")]
    public void BadStrategyStringsNameTheValue(string text)
    {
        var e = Assert.Throws<ArgumentException>(() => Strategy.Parse(text, "--strategy"));
        Assert.That(e!.ParamName, Is.EqualTo("--strategy"));
        Assert.That(e.Message, Does.Contain($"'{text}'"));
    }

    private static double Roofline(double tokens) => 0.010 + 0.0005 * Math.Max(0, tokens - 64);

    [Test]
    public void TimeCurvesFollowTheirMeasurements()
    {
        var curve = new TimeCurve(1024);
        Assert.Throws<InvalidOperationException>(() => curve.Predict(4));
        foreach (int n in new[] { 1, 8, 64, 128, 512, 1024 })
            for (int r = 0; r < 5; r++) curve.Observe(n, Roofline(n));
        foreach (double n in new[] { 1, 3, 20, 64, 100, 300, 700, 1024, 2000 })
            Assert.That(curve.Predict(n), Is.EqualTo(Roofline(n)).Within(0.08 * Roofline(n) + 1e-4), $"tokens {n}");
    }

    [Test]
    public void A_step_beyond_the_profiled_sizes_scales_the_curve_there_and_leaves_smaller_sizes_alone()
    {
        // The start-up profile measures up to 256 tokens; a 2,296-token step then ran 10 % over the curve. It used to be
        // recorded as the last knot's (1,024 tokens) time, which made every later 1,024-token prediction 2.2× too high.
        var cost = new CostModel("synthetic");
        for (int n = 1; n <= 256; n *= 2) cost.ObserveVerify(n, 0, Roofline(n));
        double at256 = cost.Target.Predict(256);
        cost.ObserveVerify(2296, 0, 1.1 * Roofline(2296));
        Assert.That(cost.Target.Predict(256), Is.EqualTo(at256).Within(1e-12), "a larger step moves no knot at or below the profile's");
        Assert.That(cost.Target.Predict(1024), Is.EqualTo(Roofline(1024)).Within(0.1 * Roofline(1024)));
        Assert.That(cost.Target.Predict(2296), Is.EqualTo(1.1 * Roofline(2296)).Within(1e-9), "the measured size predicts what was measured");
        Assert.That(cost.Target.Predict(4096), Is.EqualTo(1.1 * Roofline(4096)).Within(0.05 * Roofline(4096)), "and larger sizes keep the curve's slope");

        // A profile whose last segment came out flat (noise: 118 ms at 128 and at 256 tokens) still extrapolates at
        // least along the chord from its first knot, not flat: 2,288 tokens were predicted at 118 ms and took 1.23 s.
        var noisy = new CostModel("synthetic");
        foreach (var (n, ms) in new[] { (1, 4.9), (16, 8.5), (64, 52.1), (128, 118.1), (256, 118.2) }) noisy.ObserveVerify(n, 0, ms / 1000);
        double chord = (0.1182 - 0.0049) / 255;
        Assert.That(noisy.Target.Predict(2288), Is.EqualTo(0.1182 + chord * (2288 - 256)).Within(1e-9));

        // A measurement between two knots carries to each along the curve: knots keep following the roofline.
        var curve = new TimeCurve(1024);
        foreach (int n in new[] { 64, 128, 256, 512 }) curve.Observe(n, Roofline(n));
        for (int r = 0; r < 50; r++) curve.Observe(300, Roofline(300));
        foreach (int n in new[] { 256, 512 }) Assert.That(curve.Predict(n), Is.EqualTo(Roofline(n)).Within(1e-9), $"tokens {n}");
    }

    [Test]
    public void Measured_attention_seconds_price_the_keys_and_the_rest_prices_the_tokens()
    {
        // A workload's shape: the batch shrinks from 256 to 16 while contexts grow from 20 to 500 tokens, so tokens and
        // attended pairs move together and a fit to step times alone cannot tell them apart. Each forward here is
        // dense(tokens) + 1 µs per pair.
        static double Dense(double n) => 0.004 + 0.0004 * n;
        const double perPair = 1e-6;
        var cost = new CostModel("synthetic");
        for (int n = 1; n <= 256; n *= 2) cost.ObserveVerify(n, n * 16.0, Dense(n) + perPair * n * 16, perPair * n * 16);
        for (int step = 0; step < 400; step++)
        {
            int batch = 256 - step * 240 / 400, context = 20 + step * 480 / 400;
            double pairs = (double)batch * context, attention = perPair * pairs;
            cost.ObserveVerify(batch, pairs, Dense(batch) + attention, attention);
        }
        Assert.That(cost.SecondsPerAttendedPair, Is.EqualTo(perPair).Within(1e-12), "the attention rate is what attention took per pair");
        foreach (int n in new[] { 16, 64, 256 })
            Assert.That(cost.Target.Predict(n), Is.EqualTo(Dense(n)).Within(1e-9), $"tokens {n}: the curve holds the dense part, not attention");
        Assert.That(cost.VerifySeconds(16, 16 * 500), Is.EqualTo(Dense(16) + perPair * 8000).Within(1e-9));
    }

    [Test]
    public void Attention_costs_a_fixed_part_per_forward_and_a_rate_per_pair_and_only_the_rate_grows_with_the_keys()
    {
        // Batch-1 steps over growing contexts: attention takes 0.8 ms whatever the keys, plus 1 µs a pair. Through the
        // origin those steps said 10–40 µs a pair, and a 28-row step at 4 samples was predicted at 3× its time.
        static double Dense(double n) => 0.003 + 0.0003 * n;
        const double fixedPart = 0.0008, perPair = 1e-6;
        var cost = new CostModel("synthetic");
        foreach (int context in Enumerable.Range(20, 64))
        {
            double attention = fixedPart + perPair * context;
            cost.ObserveVerify(1, context, Dense(1) + attention, attention);
        }
        Assert.That(cost.SecondsPerAttendedPair, Is.EqualTo(perPair).Within(1e-9));
        Assert.That(cost.VerifySeconds(1, 50), Is.EqualTo(Dense(1) + fixedPart + perPair * 50).Within(1e-6), "the fixed part is in the token curve");
        Assert.That(cost.VerifySeconds(1, 5000) - cost.VerifySeconds(1, 50), Is.EqualTo(perPair * 4950).Within(1e-9), "only the rate grows with the keys");

        // Pairs that never vary cannot tell a rate from a fixed part: the rate stays where it was (0 here), the curve holds it all.
        var flat = new CostModel("synthetic");
        for (int i = 0; i < 20; i++) flat.ObserveVerify(4, 400, 0.01, 0.002);
        Assert.That(flat.SecondsPerAttendedPair, Is.EqualTo(0));
        Assert.That(flat.VerifySeconds(4, 400), Is.EqualTo(0.01).Within(1e-12));
    }

    [Test]
    public void One_paused_forward_barely_moves_a_time_curve_and_a_lasting_change_is_still_learnt()
    {
        var curve = new TimeCurve(1024);
        foreach (int n in new[] { 1, 2, 4, 8 }) curve.Observe(n, 0.0003 * n);
        curve.Observe(1, 0.055); // a 55 ms pause in a 0.3 ms draft forward
        Assert.That(curve.Predict(1), Is.LessThanOrEqualTo(0.0003 * 1.2 + 1e-12), "at most rate × (factor − 1) = 20 % up");
        for (int i = 0; i < 20; i++) curve.Observe(8, 3 * 0.0024); // the 8-token forward became 3× slower for good
        Assert.That(curve.Predict(8), Is.EqualTo(3 * 0.0024).Within(0.05 * 3 * 0.0024));
    }

    [Test]
    public void DraftModelTreesCostOneForwardPerDepthOverTheExpandedTreeSoFar()
    {
        var cost = new CostModel("test device");
        foreach (int n in new[] { 1, 4, 16, 64, 256, 1024 }) cost.ObserveDraftForward(n, Roofline(n));
        // tree:4,3,8 over 5 samples: the root's children (5 tokens), then the expanded nodes of depths < d: 3, 6, 8 (budget) per sample.
        double expected = cost.Draft.Predict(5) + cost.Draft.Predict(15) + cost.Draft.Predict(30) + cost.Draft.Predict(40);
        Assert.That(cost.DraftSeconds(Strategy.Parse("tree:4,3,8"), 5), Is.EqualTo(expected).Within(1e-12));
        Assert.That(cost.DraftSeconds(Strategy.Parse("tree:4,1,4"), 5), Is.EqualTo(cost.Draft.Predict(5) + cost.Draft.Predict(5) + cost.Draft.Predict(10) + cost.Draft.Predict(15)).Within(1e-12));
        Assert.That(cost.DraftSeconds(Strategy.Parse("tree:1,4,4"), 5), Is.EqualTo(cost.Draft.Predict(5)), "depth 1 needs only the catch-up forward");
    }

    [Test]
    public void CostProfilesRoundTripFreezeAndRejectBadFiles()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-cost-");
        try
        {
            var cost = new CostModel("test device");
            foreach (int n in new[] { 1, 16, 256 }) { cost.ObserveVerify(n, 0, Roofline(n)); cost.ObserveDraftForward(n, Roofline(n) / 10); }
            cost.ObserveSuffix(10, 0.001);
            string path = Path.Combine(dir.FullName, "profile.json");
            cost.Save(path);
            var loaded = CostModel.Load(path);
            Assert.That(loaded.Frozen);
            Assert.That(loaded.VerifySeconds(100, 0), Is.EqualTo(cost.VerifySeconds(100, 0)));
            Assert.That(loaded.DraftSeconds(Strategy.Parse("chain:3"), 8), Is.EqualTo(cost.DraftSeconds(Strategy.Parse("chain:3"), 8)));
            loaded.ObserveVerify(100, 0, 99);
            Assert.That(loaded.VerifySeconds(100, 0), Is.EqualTo(cost.VerifySeconds(100, 0)), "a frozen profile ignores new measurements");

            File.WriteAllText(path, "{ \"version\": 1, \"device\": \"x\" ");
            Assert.That(Assert.Throws<InvalidDataException>(() => CostModel.Load(path))!.Message, Does.Contain(path));
            File.WriteAllText(path, "{ \"version\": 1, \"device\": \"x\", \"target_forward\": { \"tokens\": [1, 2], \"seconds\": [0.1, -1], \"weights\": [1, 1] }, \"draft_forward\": { \"tokens\": [1], \"seconds\": [0.1], \"weights\": [1] } }");
            var e = Assert.Throws<InvalidDataException>(() => CostModel.Load(path));
            Assert.That(e!.Message, Does.Contain(path).And.Contain("target_forward"));
            Assert.Throws<FileNotFoundException>(() => CostModel.Load(Path.Combine(dir.FullName, "missing.json")));
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void AcceptanceRatesConvergeAndSamplesShrinkTowardsThePool()
    {
        var random = new Random(1);
        var estimator = new AcceptanceEstimator(forgetting: 1);
        var chain = Strategy.Parse("chain:4");
        for (int step = 0; step < 4000; step++)
        {
            long sample = step % 20;
            double rate = sample == 0 ? 0.2 : 0.8;
            int accepted = 0;
            while (accepted < 4 && random.NextDouble() < rate) accepted++;
            estimator.Observe(sample, chain, draftDepth: 4, accepted);
        }
        double pooled = 0.8 * 0.95 + 0.2 * 0.05; // 19 of 20 samples at 0.8
        for (int d = 1; d <= 4; d++)
            Assert.That(estimator.Rate(chain, d), Is.EqualTo(pooled).Within(0.06), $"depth {d}");
        Assert.That(estimator.Rate(chain, 1, sampleId: 0), Is.EqualTo(0.2).Within(0.06));
        Assert.That(estimator.Rate(chain, 1, sampleId: 5), Is.EqualTo(0.8).Within(0.05));
        double expected = Enumerable.Range(1, 4).Sum(d => Math.Pow(0.8, d));
        Assert.That(estimator.ExpectedAccepted(chain, sampleId: 5), Is.EqualTo(expected).Within(0.2));
        Assert.That(estimator.Rate(Strategy.Parse("suffix:4"), 1), Is.EqualTo(0.5), "unseen proposers start at the uniform prior");
        estimator.Forget(0);
        Assert.That(estimator.Rate(chain, 1, sampleId: 0), Is.EqualTo(estimator.Rate(chain, 1)), "forgotten samples use the pool");
    }

    [Test]
    public void AnUnreachedDepthTakesTheRateOfTheDepthBeforeItNotTheUniformPrior()
    {
        // A proposer whose drafts are mostly rejected at depth 1 rarely reaches depth 2: its deeper rates must not sit
        // at 1/2 (the selector then chose 8-token suffix drafts accepted 12 % per token at a live batch of 16).
        var suffix = Strategy.Parse("suffix:4");
        var estimator = new AcceptanceEstimator(forgetting: 1, optimism: 1);
        var random = new Random(3);
        for (int i = 0; i < 400; i++) estimator.Observe(i, suffix, draftDepth: 1, random.NextDouble() < 0.1 ? 1 : 0);
        double first = estimator.Rate(suffix, 1);
        Assert.That(first, Is.EqualTo(0.1).Within(0.04));
        for (int d = 2; d <= 4; d++)
            Assert.That(estimator.Rate(suffix, d), Is.EqualTo(first).Within(1e-12), $"depth {d}, never attempted");
        Assert.That(estimator.ExpectedAccepted(suffix), Is.LessThan(0.15));
        // Observations at depth 2 move its rate away from depth 1's, weighted against a prior of two attempts.
        for (int i = 0; i < 50; i++) estimator.Observe(1000 + i, suffix, draftDepth: 2, accepted: i < 40 ? 2 : 1);
        Assert.That(estimator.Rate(suffix, 2), Is.GreaterThan(0.7));
    }

    [Test]
    public void OptimismLiftsDepthOneOnlySoAnUntriedFamilyLooksWorthAShallowTry()
    {
        var tree = Strategy.Parse("suffix-tree:6,2,12");
        var estimator = new AcceptanceEstimator(forgetting: 1, optimism: 1);
        Assert.That(estimator.Rate(tree, 1, optimistic: true), Is.EqualTo(0.95));
        for (int d = 2; d <= 6; d++)
            Assert.That(estimator.Rate(tree, d, optimistic: true), Is.EqualTo(0.5), $"depth {d}: the plain prior");
        // 0.95 + 0.95·0.5 + … : about 1.9 tokens from 6 levels, where 0.95 per level promised 4.4.
        Assert.That(estimator.ExpectedAccepted(tree, optimistic: true), Is.EqualTo(0.95 * (1 + 0.5 + 0.25 + 0.125 + 0.0625 + 0.03125)).Within(1e-9));
    }

    [Test]
    public void OptimisticRatesBoundThePlainRateFromAboveAndFadeWithObservations()
    {
        var chain = Strategy.Parse("chain:2");
        var estimator = new AcceptanceEstimator(forgetting: 1, optimism: 1);
        Assert.That(estimator.Rate(chain, 1), Is.EqualTo(0.5), "decision-free reads are not optimistic");
        Assert.That(estimator.Rate(chain, 1, optimistic: true), Is.EqualTo(0.95), "a family never tried looks worth a try");
        var random = new Random(4);
        double previousGap = double.PositiveInfinity;
        foreach (int batch in new[] { 10, 100, 1000 })
        {
            for (int i = 0; i < batch; i++) estimator.Observe(i, chain, 1, random.NextDouble() < 0.3 ? 1 : 0);
            double plain = estimator.Rate(chain, 1), optimistic = estimator.Rate(chain, 1, optimistic: true);
            Assert.That(optimistic, Is.GreaterThanOrEqualTo(plain));
            Assert.That(optimistic - plain, Is.LessThan(previousGap), $"after {batch} more observations the bonus shrinks");
            previousGap = optimistic - plain;
        }
        Assert.That(previousGap, Is.LessThan(0.02), "1110 observations leave a small bonus");
        Assert.That(new AcceptanceEstimator().Rate(chain, 1, optimistic: true), Is.EqualTo(0.5), "no optimism configured: the plain rate");
    }

    [Test]
    public void TheSelectorTriesAnUntriedDraftWhenOptimisticAndStaysOffOtherwise()
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 2, 4, 8, 16, 32, 64, 128, 256 }) { cost.ObserveVerify(n, 0, 0.004 + 0.0005 * n); cost.ObserveDraftForward(n, 0.0001 * n); }
        var batch = Enumerable.Range(0, 8).Select(i => new LiveSample(i, 20, 100)).ToArray();
        // 8 samples: off emits 8 tokens in 8 ms; chain:1 emits 8(1 + p) in 12.8 ms, which pays off only for p > 0.6.
        var cautious = new StrategySelector(cost, new AcceptanceEstimator(), [Strategy.Parse("chain:1")], perSampleLengths: false);
        var optimistic = new StrategySelector(cost, new AcceptanceEstimator(optimism: 1), [Strategy.Parse("chain:1")], perSampleLengths: false);
        Assert.That(cautious.Choose(batch).Strategy.IsOff, "prior 0.5 alone: off");
        var explored = optimistic.Choose(batch);
        Assert.That(explored.Strategy.ToString(), Is.EqualTo("chain:1"), "never tried: explored");
        // Exploration drafts for as many samples as keep the step within 10 % of off's 8 ms, but for at least 8
        // (here all): a step must bring enough observations for the optimism to fade.
        Assert.That(explored.Exploring, "chosen on optimism alone");
        Assert.That(explored.DraftDepths.Count(d => d > 0), Is.EqualTo(8), string.Join(",", explored.DraftDepths));
    }

    /// <summary>256 live samples (context 20, 100 tokens to go) and forwards costing 50 ms plus 0.3 ms a token (drafts 0.01 ms a token).</summary>
    private static (CostModel Cost, LiveSample[] Batch) FullBatchOnAFixedPlusLinearCost()
    {
        var cost = new CostModel("synthetic");
        for (int n = 1; n <= 4096; n *= 2) { cost.ObserveVerify(n, 0, 0.05 + 0.0003 * n); cost.ObserveDraftForward(n, 0.00001 * n); }
        return (cost, Enumerable.Range(0, 256).Select(i => new LiveSample(i, 20, 100)).ToArray());
    }

    [Test]
    public void Exploring_at_a_full_batch_drafts_for_a_few_samples_only_and_a_known_winner_drafts_for_all()
    {
        // A fixed 50 ms plus 0.3 ms a token: a chain:1 step (2 tokens a sample and a draft forward) costs 1.63× an off
        // step at 256 samples, which the prior acceptance (1.5 tokens a sample) does not repay and the optimistic one
        // (depth 1 lifted to 0.95: 1.95 tokens) does.
        var (cost, batch) = FullBatchOnAFixedPlusLinearCost();
        var chain = Strategy.Parse("chain:1");
        var plan = new StrategySelector(cost, new AcceptanceEstimator(optimism: 1), [chain]).Choose(batch);
        Assert.That(plan.Strategy, Is.EqualTo(chain), "never tried: explored; " + string.Join("; ", plan.Candidates.Select(c => $"{c.Strategy}: {c.Goodput:F0}")));
        Assert.That(plan.Exploring);
        // off: 126.8 ms; each sample drafting adds a verified token (0.3 ms) and 0.01 ms of draft forward: 40 fit 10 %.
        Assert.That(plan.DraftDepths.Count(d => d > 0), Is.EqualTo(40), string.Join(",", plan.DraftDepths));
        Assert.That(plan.PredictedSeconds, Is.LessThanOrEqualTo(1.1 * (0.05 + 0.0003 * 256)));

        // Drafts known to be accepted in full pay at this batch: no cap.
        var sure = new AcceptanceEstimator(optimism: 1);
        for (int i = 0; i < 2000; i++) sure.Observe(i % 256, chain, 1, 1);
        var winner = new StrategySelector(cost, sure, [chain]).Choose(batch);
        Assert.That(winner.Strategy, Is.EqualTo(chain));
        Assert.That(winner.Exploring, Is.False);
        Assert.That(winner.DraftDepths.All(d => d == 1));
    }

    [Test]
    public void A_depth_with_no_observations_of_its_own_is_explored_not_drafted_for_the_whole_batch()
    {
        // Seen in a workload run: one exploratory suffix step's 35 depth-1 drafts were all accepted, depths 2–8 took that
        // rate (97 %), and suffix:8 was drafted for all 256 live samples: a step of 8.3× an off step's time.
        var (cost, batch) = FullBatchOnAFixedPlusLinearCost();
        var deep = Strategy.Parse("chain:8");
        var estimator = new AcceptanceEstimator(optimism: 1);
        for (int i = 0; i < 35; i++) estimator.Observe(i, deep, 1, 1);
        var plan = new StrategySelector(cost, estimator, [deep]).Choose(batch);
        Assert.That(plan.Strategy, Is.EqualTo(deep), string.Join("; ", plan.Candidates.Select(c => $"{c.Strategy}: {c.Goodput:F0}")));
        Assert.That(plan.Exploring, "depths 2–8 rest on no observations");
        // 10 % of an off step (12.7 ms) fits 5 samples' 8 drafted tokens (2.4 ms each): the floor of 8 samples applies.
        Assert.That(plan.DraftDepths.Count(d => d > 0), Is.EqualTo(StrategySelector.ExplorationMinSamples), string.Join(",", plan.DraftDepths));

        // Once every depth drafted has observations (all accepted), the same plan is no exploration: every sample drafts.
        for (int i = 0; i < 64; i++) estimator.Observe(i, deep, 8, 8);
        var known = new StrategySelector(cost, estimator, [deep]).Choose(batch);
        Assert.That(known.Strategy, Is.EqualTo(deep));
        Assert.That(known.Exploring, Is.False);
        Assert.That(known.DraftDepths.All(d => d > 0));
    }

    [Test]
    public void MeasuredStepOverheadCountsInGoodputAndSurvivesTheProfile()
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 2, 4, 8, 16, 32 }) { cost.ObserveVerify(n, 0, 0.001 * n); cost.ObserveDraftForward(n, 0.0001 * n); }
        var estimator = new AcceptanceEstimator(forgetting: 1);
        for (int i = 0; i < 500; i++) estimator.Observe(i, Strategy.Parse("chain:1"), 1, i % 5 < 2 ? 1 : 0); // accepted 40 %
        var selector = new StrategySelector(cost, estimator, [Strategy.Parse("chain:1")], perSampleLengths: false);
        var one = new[] { new LiveSample(1, 20, 100) };
        Assert.That(cost.StepOverheadSeconds(4), Is.EqualTo(0), "no step measured yet: no overhead");
        Assert.That(selector.Choose(one).Strategy.IsOff, "40 % acceptance does not pay for a token of verification");
        // A fixed 10 ms per step (selection, kernel, commit) makes every step dear, so emitting 1.4 tokens a step wins.
        foreach (int n in new[] { 1, 2, 4, 8 }) cost.ObserveStepOverhead(n, 0.010);
        Assert.That(cost.StepOverheadSeconds(2), Is.EqualTo(0.010).Within(1e-12));
        Assert.That(selector.Choose(one).Strategy.ToString(), Is.EqualTo("chain:1"));

        var dir = Directory.CreateTempSubdirectory("rlhfspec-cost-");
        try
        {
            string path = Path.Combine(dir.FullName, "profile.json");
            cost.Save(path);
            Assert.That(CostModel.Load(path).StepOverheadSeconds(3), Is.EqualTo(cost.StepOverheadSeconds(3)));
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void MeasuredStepTimesCorrectEveryStrategyOfTheirClassAndAFrozenModelIgnoresThem()
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 2, 4, 8, 16, 32, 64, 128 }) { cost.ObserveVerify(n, 0, 0.004 + 0.0001 * n); cost.ObserveDraftForward(n, 0.0002 + 0.00001 * n); }
        var estimator = new AcceptanceEstimator(forgetting: 1);
        foreach (var s in new[] { "chain:2", "chain:4" })
            for (int i = 0; i < 400; i++) estimator.Observe(i, Strategy.Parse(s), 4, Math.Min(4, i % 4)); // ~75 % per depth
        var selector = new StrategySelector(cost, estimator, [Strategy.Parse("chain:2"), Strategy.Parse("chain:4")], perSampleLengths: false);
        var batch = Enumerable.Range(0, 8).Select(i => new LiveSample(i, 20, 100)).ToArray();
        var plan = selector.Choose(batch);
        Assert.That(plan.Strategy.IsOff, Is.False, "the curves alone make drafting look cheap");
        Assert.That(plan.PredictedSeconds, Is.GreaterThan(0));
        Assert.That(cost.TimeCorrection(plan.Strategy, 8), Is.EqualTo(1), "nothing measured yet");

        // The device says draft-model steps take 4x what the curves predict (sampling, bookkeeping...).
        for (int k = 0; k < 20; k++) cost.ObserveStepTime(Strategy.Parse("chain:2"), 8, plan.PredictedSeconds, 4 * plan.PredictedSeconds);
        Assert.That(cost.TimeCorrection(Strategy.Parse("chain:2"), 8), Is.InRange(3.3, 4.0));
        Assert.That(cost.TimeCorrection(Strategy.Parse("chain:4"), 7), Is.EqualTo(cost.TimeCorrection(Strategy.Parse("chain:2"), 8)), "shared by the class and the bucket");
        Assert.That(cost.TimeCorrection(Strategy.Off, 8), Is.EqualTo(1), "off is its own class");
        cost.ObserveStepTime(Strategy.Parse("chain:2"), 64, 1, 1);
        Assert.That(cost.TimeCorrection(Strategy.Parse("chain:2"), 64), Is.EqualTo(1), "other batch sizes are their own bucket");
        Assert.That(cost.TimeCorrection(Strategy.Parse("chain:2"), 16), Is.EqualTo(cost.TimeCorrection(Strategy.Parse("chain:2"), 8)), "an unmeasured bucket borrows the nearest measured one's");
        Assert.That(selector.Choose(batch).Strategy.IsOff, "corrected, drafting no longer pays");

        var dir = Directory.CreateTempSubdirectory("rlhfspec-cost-");
        try
        {
            string path = Path.Combine(dir.FullName, "profile.json");
            cost.Save(path);
            var frozen = CostModel.Load(path);
            frozen.ObserveStepTime(Strategy.Parse("chain:2"), 8, 1, 10);
            Assert.That(frozen.TimeCorrection(Strategy.Parse("chain:2"), 8), Is.EqualTo(1), "a frozen profile neither keeps nor learns corrections");
        }
        finally { dir.Delete(recursive: true); }
    }

    [Test]
    public void One_slow_step_or_a_stale_measurement_does_not_keep_a_class_from_being_tried_again()
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 2, 4, 8, 16, 32, 64, 128 }) { cost.ObserveVerify(n, 0, 0.004 + 0.0001 * n); cost.ObserveDraftForward(n, 0.0002 + 0.00001 * n); }
        var estimator = new AcceptanceEstimator(forgetting: 1);
        for (int i = 0; i < 400; i++) estimator.Observe(i, Strategy.Parse("chain:4"), 4, Math.Min(4, i % 5)); // ~80 % per depth
        var selector = new StrategySelector(cost, estimator, [Strategy.Parse("chain:4")], perSampleLengths: false);
        var batch = new[] { new LiveSample(1, 20, 100) };
        var plan = selector.Choose(batch);
        Assert.That(plan.Strategy, Is.EqualTo(Strategy.Parse("chain:4")), "the curves make drafting pay at batch 1");

        // One step 10x slower than predicted (a pause outside the step's work) moves the correction by at most 2x.
        cost.ObserveStepTime(plan.Strategy, 1, plan.PredictedSeconds, 10 * plan.PredictedSeconds);
        Assert.That(cost.TimeCorrection(plan.Strategy, 1), Is.LessThanOrEqualTo((2.0 + CostModel.RatioPrior) / (1 + CostModel.RatioPrior) + 1e-12));

        // A lasting 4x is learnt, and prices drafting out; then, while only off runs, that evidence ages back to the curves.
        for (int k = 0; k < 30; k++) cost.ObserveStepTime(plan.Strategy, 1, plan.PredictedSeconds, 4 * plan.PredictedSeconds);
        Assert.That(cost.TimeCorrection(plan.Strategy, 1), Is.GreaterThan(3.3));
        Assert.That(selector.Choose(batch).Strategy.IsOff, "corrected, drafting no longer pays");
        double off = cost.VerifySeconds(1, 0);
        int steps = 0;
        while (selector.Choose(batch).Strategy.IsOff && steps < 1000) { cost.ObserveStepTime(Strategy.Off, 1, off, off); steps++; }
        Assert.That(steps, Is.InRange(20, 300), "drafting is tried again after its evidence aged, not at once and not never");
        Assert.That(cost.TimeCorrection(Strategy.Off, 1), Is.EqualTo(1).Within(1e-9), "off's own steps keep its correction at their ratio");
    }

    private static (CostModel, AcceptanceEstimator) Workload(double acceptance)
    {
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024 })
        {
            cost.ObserveVerify(n, 0, Roofline(n));
            cost.ObserveDraftForward(n, Roofline(n) / 8);
        }
        var estimator = new AcceptanceEstimator(forgetting: 1);
        var random = new Random(2);
        foreach (var s in new[] { "chain:1", "tree:8,2,16" })
            for (int i = 0; i < 3000; i++)
            {
                int accepted = 0;
                while (accepted < 8 && random.NextDouble() < acceptance) accepted++;
                estimator.Observe(1000 + i, Strategy.Parse(s), 8, accepted);
            }
        return (cost, estimator);
    }

    [Test]
    public void A_candidate_left_with_no_draft_is_not_chosen_over_off()
    {
        var cost = new CostModel("synthetic");
        for (int n = 1; n <= 512; n *= 2) cost.ObserveVerify(n, 0, 0.01 + 0.0001 * n);
        var suffix = Strategy.Parse("suffix:4");
        // Suffix steps measured faster than predicted, off steps slower: suffix's class correction is below off's.
        for (int i = 0; i < 10; i++) { cost.ObserveStepTime(suffix, 16, 0.01, 0.007); cost.ObserveStepTime(Strategy.Off, 16, 0.01, 0.013); }
        Assert.That(cost.TimeCorrection(suffix, 16), Is.LessThan(cost.TimeCorrection(Strategy.Off, 16)));
        var selector = new StrategySelector(cost, new AcceptanceEstimator(optimism: 1), [suffix]);
        // One token left each: no sample can draft, so a suffix:4 step would be an off step under another name.
        var plan = selector.Choose(Enumerable.Range(0, 16).Select(i => new LiveSample(i, 20, 1)).ToArray());
        Assert.That(plan.Strategy.IsOff, $"chose {plan.Strategy} with depths {string.Join(",", plan.DraftDepths)}");
        Assert.That(plan.PredictedGoodput, Is.EqualTo(plan.OffGoodput));
    }

    [Test]
    public void A_draft_that_has_not_seen_the_contexts_pays_its_catch_up_over_the_steps_it_serves()
    {
        var cost = new CostModel("synthetic");
        for (int n = 1; n <= 4096; n *= 2) { cost.ObserveVerify(n, 0, 0.01 + 0.00001 * n); cost.ObserveDraftForward(n, 0.0001 * n); }
        var chain = Strategy.Parse("chain:2");
        var estimator = new AcceptanceEstimator();
        for (int i = 0; i < 400; i++) estimator.Observe(i % 4, chain, 2, 2);
        var selector = new StrategySelector(cost, estimator, [chain]);
        LiveSample[] Batch(int lag) => Enumerable.Range(0, 4).Select(i => new LiveSample(i, 300, 100, lag)).ToArray();
        var ones = new[] { 2, 2, 2, 2 };
        // Caught up: the first draft forward feeds the 4 pending tokens; 300 tokens behind: 1,200 (0.12 s).
        double caughtUp = selector.Predict(chain, Batch(1), ones).Seconds, behind = selector.Predict(chain, Batch(300), ones).Seconds;
        Assert.That(behind - caughtUp, Is.EqualTo(cost.Draft.Predict(1200) - cost.Draft.Predict(4)).Within(1e-9));
        Assert.That(selector.Choose(Batch(1)).Strategy, Is.EqualTo(chain), "a caught-up draft accepted in full pays");
        // The catch-up serves every later step: compared over CatchUpSteps steps, 1,200 tokens (0.12 s, 15 ms a step)
        // are repaid by 3 tokens a sample where off emits 1; the step's predicted time still holds all of it.
        var behindPlan = selector.Choose(Batch(300));
        Assert.That(behindPlan.Strategy, Is.EqualTo(chain), "a catch-up worth its later steps is taken");
        Assert.That(behindPlan.PredictedSeconds, Is.EqualTo(behind).Within(1e-9), "the step's predicted time counts the whole catch-up");
        // 3,000 tokens behind a sample (12,000 in all, 1.2 s: 150 ms a step over 8 steps) are not repaid.
        Assert.That(selector.Choose(Batch(3000)).Strategy.IsOff, "feeding 12,000 tokens to the draft first does not pay");
    }

    [Test]
    public void DeepDraftsWinForFewSamplesAndOffWinsForAFullBatch()
    {
        var (cost, estimator) = Workload(0.8);
        var candidates = new[] { "chain:2", "chain:4", "chain:8", "tree:8,2,16" }.Select(s => Strategy.Parse(s));
        var selector = new StrategySelector(cost, estimator, candidates);
        LiveSample[] Batch(int n) => Enumerable.Range(0, n).Select(i => new LiveSample(i, 50, 500)).ToArray();

        var few = selector.Choose(Batch(2));
        Assert.That(few.Strategy.Depth, Is.GreaterThanOrEqualTo(4), $"2 samples: {few.Strategy}");
        Assert.That(few.PredictedGoodput, Is.GreaterThan(2 * few.OffGoodput));

        var full = selector.Choose(Batch(256));
        Assert.That(full.Strategy.IsOff || full.DraftDepths.Average() <= 2, $"256 samples: {full.Strategy}, depths {full.DraftDepths.Average()}");
        Assert.That(full.PredictedGoodput, Is.GreaterThanOrEqualTo(full.OffGoodput));

        foreach (int n in new[] { 1, 4, 16, 64, 128, 256 })
        {
            var plan = selector.Choose(Batch(n));
            Assert.That(plan.PredictedGoodput, Is.GreaterThanOrEqualTo(plan.OffGoodput), $"batch {n}");
            Assert.That(plan.Candidates.Select(c => c.Strategy), Does.Contain(Strategy.Off));
        }
    }

    [Test]
    public void ConfidentSamplesDraftDeeperThanDoubtfulOnes()
    {
        var (_, estimator) = Workload(0.7);
        // A cheap draft model (0.05 ms a forward) and a verifier flat up to 64 tokens: extra tokens are free only
        // until the knee, so they must go to the samples most likely to keep them.
        var cost = new CostModel("synthetic");
        foreach (int n in new[] { 1, 4, 16, 64, 256, 1024 }) { cost.ObserveVerify(n, 0, Roofline(n)); cost.ObserveDraftForward(n, 5e-5); }
        var chain = Strategy.Parse("chain:8");
        // Sample 0 has always been accepted in full, sample 1 almost never.
        for (int i = 0; i < 200; i++)
        {
            estimator.Observe(0, chain, 8, 8);
            estimator.Observe(1, chain, 8, 0);
        }
        var selector = new StrategySelector(cost, estimator, [chain]);
        // 48 samples: a full chain each is far past the cost curve's knee (64 tokens), so tokens must be rationed.
        var batch = Enumerable.Range(0, 48).Select(i => new LiveSample(i, 50, 500)).ToArray();
        var plan = selector.Choose(batch);
        Assert.That(plan.Strategy, Is.EqualTo(chain), string.Join("; ", plan.Candidates.Select(c => $"{c.Strategy}: {c.Goodput:F0} tokens/s")));
        Assert.That(plan.DraftDepths[0], Is.GreaterThan(plan.DraftDepths[1]));
        Assert.That(plan.PerSampleLengths);
    }

    [Test]
    public void DraftsNeverExceedWhatASampleStillNeeds()
    {
        var (cost, estimator) = Workload(0.9);
        var selector = new StrategySelector(cost, estimator, [Strategy.Parse("chain:8")]);
        var plan = selector.Choose([new LiveSample(1, 10, 3), new LiveSample(2, 10, 1)]);
        Assert.That(plan.DraftDepths[0], Is.LessThanOrEqualTo(2));
        Assert.That(plan.DraftDepths[1], Is.EqualTo(0));
    }
}
