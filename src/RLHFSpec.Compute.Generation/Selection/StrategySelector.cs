using RLHFSpec.Compute.Drafting;
namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// Workload-aware strategy selection: each step, for the live batch, the candidate (always including
/// <c>off</c>) with the highest expected goodput = Σ_samples E[accepted + 1] / (T_draft + T_verify + T_overhead), from the
/// measured <see cref="CostModel"/> and the online <see cref="AcceptanceEstimator"/>. With few samples left the
/// verification pass costs about the same for many more tokens, so deep drafts win; with a full batch every extra
/// token costs compute, so short chains or <c>off</c> win. For chains it then trims each sample's length greedily
/// (dropping the draft token least likely to be accepted while that raises goodput), so confident samples draft
/// deeper than doubtful ones in the same step. Each candidate's predicted time is then multiplied by the measured
/// ratio of actual to predicted step time of its class (off, draft model, suffix) at this batch size
/// (<see cref="CostModel.TimeCorrection"/>): what the curves miss is learnt from the steps run, and a correction
/// learnt on one draft length applies to the others.
/// </summary>
public sealed class StrategySelector : IStepPlanner
{
    private readonly CostModel _cost;
    private readonly AcceptanceEstimator _acceptance;
    private readonly Strategy[] _candidates;
    private readonly bool _perSampleLengths;
    private readonly int[] _family;        // per candidate: its proposer family's index (−1 for off)
    private readonly int[] _familyDeepest; // per family: the deepest candidate of the family (its reach is computed that deep)
    private readonly int _remainingThatMatters; // the deepest candidate's depth + 1: more remaining tokens count the same
    private readonly bool _draftModel;          // a draft-model candidate exists: draft time depends on each sample's DraftLag

    public StrategySelector(CostModel cost, AcceptanceEstimator acceptance, IEnumerable<Strategy> candidates, bool perSampleLengths = true)
    {
        _cost = cost;
        _acceptance = acceptance;
        _candidates = candidates.Prepend(Strategy.Off).Distinct().ToArray();
        _perSampleLengths = perSampleLengths;
        var families = _candidates.Where(c => !c.IsOff).Select(FamilyOf).Distinct().ToList();
        _family = _candidates.Select(c => c.IsOff ? -1 : families.IndexOf(FamilyOf(c))).ToArray();
        _familyDeepest = families.Select(f => _candidates.Where(c => !c.IsOff && FamilyOf(c) == f).Max(c => c.Depth)).ToArray();
        _remainingThatMatters = _candidates.Max(c => c.Depth) + 1;
        _draftModel = _candidates.Any(c => !c.IsOff && c.Proposer == ProposerKind.DraftModel);
    }

    /// <summary>Candidates of one family share their per-depth acceptance (proposer, shape, top-k of trees).</summary>
    private static AcceptanceEstimator.Family FamilyOf(Strategy s) => AcceptanceEstimator.FamilyOf(s);

    public IReadOnlyList<Strategy> Candidates => _candidates;

    /// <summary>
    /// Whether a choice can depend on the samples' ids (their own acceptance statistics); else it depends only on
    /// each sample's context and remaining tokens, in order, and on the cost model and the pooled statistics.
    /// </summary>
    public bool DependsOnSampleIds => _acceptance.HasSampleStatistics;

    /// <summary>
    /// Whether a choice can depend on the samples' contexts: they enter only the attended pairs of the verify pass,
    /// whose time is <see cref="CostModel.SecondsPerAttendedPair"/> × pairs, exactly 0 when that rate is 0.
    /// </summary>
    public bool DependsOnContexts => _cost.SecondsPerAttendedPair != 0;

    /// <summary>Length of <see cref="BatchKeyOf"/>'s key for a batch of <paramref name="batch"/> samples.</summary>
    internal int BatchKeyLength(int batch) => batch * (1 + (DependsOnSampleIds ? 1 : 0) + (_draftModel ? 1 : 0));

    /// <summary>
    /// Writes what a choice reads of <paramref name="samples"/>, in order: per sample its context (where
    /// <see cref="DependsOnContexts"/>) and remaining tokens clamped to [1, deepest candidate + 1] in one value, then its
    /// id where <see cref="DependsOnSampleIds"/>. Remaining tokens enter as min(depth, max(0, remaining − 1)) and as
    /// the cap min(accepted + 1, max(1, remaining)) with accepted ≤ depth (a sum of at most depth probabilities), so
    /// values outside that range act as its ends. Two batches with equal keys get the same plan, the same predicted
    /// seconds and the same expected tokens from this selector in its current state, to the bit.
    /// </summary>
    internal void BatchKeyOf(ReadOnlySpan<LiveSample> samples, Span<long> key)
    {
        bool contexts = DependsOnContexts, ids = DependsOnSampleIds, lags = _draftModel;
        int k = 0;
        foreach (var x in samples)
        {
            long remaining = Math.Clamp(x.RemainingTokens, 1, _remainingThatMatters);
            key[k++] = contexts ? (long)(uint)x.ContextLength << 32 | remaining : remaining;
            if (ids) key[k++] = x.SampleId;
            if (lags) key[k++] = Math.Max(1, x.DraftLag);
        }
    }

    IReadOnlyList<Strategy> IStepPlanner.Strategies => _candidates;

    bool IStepPlanner.Adaptive => true;

    StepPlan IStepPlanner.Plan(IReadOnlyList<LiveSample> samples) => Choose(samples);

    /// <summary>
    /// Steps over which a draft model's catch-up is charged when candidates are compared. The catch-up (the draft
    /// feeding the tokens it has not seen, a sample's whole context the first time) is paid once and serves every
    /// later step the draft drafts for that sample, so charging all of it to one step priced the draft model out for
    /// good once contexts were long: a workload run never drafted with it at 1–3 live samples, where it gains 2–3×,
    /// because the first step's catch-up of 300–500 tokens a sample made that step slower than <c>off</c>. The step's
    /// predicted time (what the measured time is compared with, and the exploration budget) still counts all of it.
    /// </summary>
    public const int CatchUpSteps = 8;

    public StepPlan Choose(IReadOnlyList<LiveSample> samples)
    {
        if (samples.Count == 0) return new StepPlan(Strategy.Off, [], 0, 0, []) { PredictedSeconds = 0 };
        var real = samples;
        samples = _draftModel ? Amortised(samples) : samples;
        var predictions = new List<(Strategy, double)>(_candidates.Length);
        Strategy best = Strategy.Off;
        int bestIndex = 0;
        int[] bestDepths = new int[samples.Count];
        double bestGoodput = double.NegativeInfinity, offGoodput = 0;
        // Per-sample cumulative (optimistic) acceptance, once per proposer family up to its deepest candidate.
        var reachByFamily = new double[_familyDeepest.Length][][];
        for (int c = 0; c < _candidates.Length; c++)
        {
            var s = _candidates[c];
            var depths = new int[samples.Count];
            for (int i = 0; i < depths.Length; i++) depths[i] = s.IsOff ? 0 : Math.Min(s.Depth, Math.Max(0, samples[i].RemainingTokens - 1));
            double[][]? reach = null;
            if (!s.IsOff) reach = reachByFamily[_family[c]] ??= CumulativeReach(s, samples, _familyDeepest[_family[c]]);
            double g = _perSampleLengths && s.Shape == DraftShape.Chain ? TrimChains(s, samples, depths, reach!) : Goodput(s, samples, depths, reach);
            // Trimmed to no draft at all, a candidate is an off step: with its own class's time correction it could
            // look faster than off (a run took 7 such "suffix:4" steps at 256 samples, learning suffix's correction
            // from off steps). Off itself is a candidate.
            if (!s.IsOff && Array.TrueForAll(depths, d => d == 0)) continue;
            g /= _cost.TimeCorrection(s, samples.Count);
            predictions.Add((s, g));
            if (s.IsOff) offGoodput = g;
            if (g > bestGoodput) { best = s; bestIndex = c; bestGoodput = g; bestDepths = depths; }
        }
        // The chosen plan's predicted time before correction: what the step's measured time is compared with.
        double[][]? bestReach = best.IsOff ? null : reachByFamily[_family[bestIndex]];
        bool exploring = !best.IsOff && (Exploring(best, samples, bestDepths, offGoodput) || ThinEvidence(best, bestDepths));
        if (exploring) bestGoodput = CapExploration(best, real, bestDepths, bestReach!);
        var (_, bestSeconds) = Predict(best, real, bestDepths, optimistic: true, bestReach);
        return new StepPlan(best, bestDepths, bestGoodput, offGoodput, predictions) { PredictedSeconds = bestSeconds, Exploring = exploring };
    }

    /// <summary>
    /// How much longer than an <c>off</c> step an exploratory step may be predicted to take: a candidate chosen only
    /// for its optimistic acceptance drafts for as many samples as fit this budget, not for the whole batch.
    /// </summary>
    public const double ExplorationBudget = 0.1;

    /// <summary>
    /// Fewest samples an exploratory step drafts for (or all, in a smaller batch): each brings one observation, and
    /// with one or two a step the optimism fades so slowly that exploring suffix drafts took half a workload's decode
    /// time in one run.
    /// </summary>
    public const int ExplorationMinSamples = 8;

    /// <summary>The samples with each draft lag beyond one token charged over <see cref="CatchUpSteps"/> steps.</summary>
    private static LiveSample[] Amortised(IReadOnlyList<LiveSample> samples)
    {
        var amortised = new LiveSample[samples.Count];
        for (int i = 0; i < amortised.Length; i++)
        {
            var x = samples[i];
            amortised[i] = x with { DraftLag = 1 + (Math.Max(1, x.DraftLag) - 1 + CatchUpSteps - 1) / CatchUpSteps };
        }
        return amortised;
    }

    /// <summary>Whether <paramref name="s"/> wins only on its optimistic acceptance: with the plain estimates it would lose to <c>off</c>.</summary>
    private bool Exploring(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, double offGoodput)
    {
        var (tokens, seconds) = Predict(s, samples, depths, optimistic: false, null);
        return seconds <= 0 || tokens / seconds / _cost.TimeCorrection(s, samples.Count) < offGoodput;
    }

    /// <summary>
    /// Whether the plan drafts to a depth its family has fewer than <see cref="ExplorationMinSamples"/> pooled attempts
    /// at: a deep rate with no observations is the rate of the depth before it (<see cref="AcceptanceEstimator"/>), so
    /// one exploratory step of depth-1 drafts accepted 35 of 35 times made suffix:8 look accepted at 97 % a level, and
    /// the selector drafted 8 tokens for all 256 live samples: 2,296 rows, a step of 1.0 s (an <c>off</c> step there:
    /// 0.12 s) that emitted 551 tokens. Such a plan is an exploration too, capped like one.
    /// </summary>
    private bool ThinEvidence(Strategy s, int[] depths)
    {
        int deepest = 0;
        foreach (int d in depths) deepest = Math.Max(deepest, d);
        for (int d = 1; d <= deepest; d++)
            if (_acceptance.PooledAttempts(s, d) < ExplorationMinSamples) return true;
        return false;
    }

    /// <summary>
    /// Keeps the drafts of the first samples only, as many as keep the step within <see cref="ExplorationBudget"/> of an
    /// <c>off</c> step (at least <see cref="ExplorationMinSamples"/>): a class tried at a batch of 256 once cost 5× an <c>off</c> step (a suffix:4
    /// step took 7 % of a whole workload's decode time), and a few samples' drafts teach its acceptance as well.
    /// Returns the capped plan's (optimistic, corrected) goodput.
    /// </summary>
    private double CapExploration(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, double[][] reach)
    {
        int n = samples.Count;
        double correction = _cost.TimeCorrection(s, n);
        double budget = (1 + ExplorationBudget) * Predict(Strategy.Off, samples, new int[n], optimistic: false, null).Seconds * _cost.TimeCorrection(Strategy.Off, n);
        var full = (int[])depths.Clone();
        var kept = new int[n]; // one buffer for every probe of the search
        int[] Keep(int m)
        {
            Array.Clear(kept);
            for (int i = 0, drafting = 0; i < n && drafting < m; i++)
                if (full[i] > 0) { kept[i] = full[i]; drafting++; }
            return kept;
        }
        int hi = full.Count(d => d > 0), lo = Math.Min(ExplorationMinSamples, hi);
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (Predict(s, samples, Keep(mid), optimistic: true, reach).Seconds * correction <= budget) lo = mid;
            else hi = mid - 1;
        }
        Keep(lo).CopyTo(depths, 0);
        var (tokens, seconds) = Predict(s, samples, depths, optimistic: true, reach);
        return seconds > 0 ? tokens / seconds / correction : 0;
    }

    /// <summary>reach[i][d] = optimistic probability that sample i accepts at least d draft tokens (reach[i][0] = 1).</summary>
    private double[][] CumulativeReach(Strategy s, IReadOnlyList<LiveSample> samples, int depth)
    {
        var reach = new double[samples.Count][];
        for (int i = 0; i < reach.Length; i++)
        {
            if (i > 0 && !_acceptance.HasSampleStatistics)
            {
                reach[i] = (double[])reach[0].Clone(); // no sample has rates of its own: every row is the pool's
                continue;
            }
            reach[i] = new double[depth + 1];
            _acceptance.FillReach(s, samples[i].SampleId, optimistic: true, reach[i]);
        }
        return reach;
    }

    /// <summary>Predicted tokens per second of drafting <paramref name="depths"/> with <paramref name="s"/> (optimistic acceptance).</summary>
    public double Goodput(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths) => Goodput(s, samples, depths, null);

    private double Goodput(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, double[][]? reach)
    {
        var (tokensOut, seconds) = Predict(s, samples, depths, optimistic: true, reach);
        return seconds > 0 ? tokensOut / seconds : 0;
    }

    /// <summary>Expected tokens emitted and seconds taken by one step drafting <paramref name="depths"/> with <paramref name="s"/>.</summary>
    public (double Tokens, double Seconds) Predict(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, bool optimistic = false) =>
        Predict(s, samples, depths, optimistic, null);

    private (double Tokens, double Seconds) Predict(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, bool optimistic, double[][]? reach)
    {
        double tokensOut = 0, verifyTokens = 0, pairs = 0;
        int drafting = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var x = samples[i];
            int nodes = s.Shape == DraftShape.Tree && depths[i] > 0 ? s.Budget : depths[i];
            tokensOut += reach is null ? ExpectedTokens(s, x, depths[i], optimistic) : Math.Min(1 + Sum(reach[i], depths[i]), Math.Max(1, x.RemainingTokens));
            verifyTokens += 1 + nodes;
            pairs += (1.0 + nodes) * (x.ContextLength + (1 + nodes) / 2.0);
            if (depths[i] > 0) drafting++;
        }
        int catchUp = 0;
        for (int i = 0; i < samples.Count; i++) if (depths[i] > 0) catchUp += Math.Max(1, samples[i].DraftLag);
        double draft = s.IsOff || drafting == 0 ? 0
            : s.Proposer == ProposerKind.DraftModel && s.Shape == DraftShape.Chain ? _cost.DraftChainSeconds(depths, catchUp)
            : _cost.DraftSeconds(s, drafting, catchUp);
        return (tokensOut, draft + StepSeconds((int)verifyTokens, pairs));
    }

    private double StepSeconds(int verifyTokens, double pairs) => _cost.VerifySeconds(verifyTokens, pairs) + _cost.StepOverheadSeconds(verifyTokens);

    private static double Sum(double[] reach, int depth)
    {
        double sum = 0;
        for (int d = 1; d <= depth; d++) sum += reach[d];
        return sum;
    }

    /// <summary>Expected tokens a sample emits in one step: accepted drafts plus the next token, capped by what it still needs.</summary>
    public double ExpectedTokens(Strategy s, LiveSample sample, int depth, bool optimistic = false)
    {
        double expected = depth == 0 ? 0 : _acceptance.ExpectedAccepted(s, sample.SampleId, depth, optimistic);
        return Math.Min(expected + 1, Math.Max(1, sample.RemainingTokens));
    }

    /// <summary>
    /// Per-sample chain lengths: repeatedly drop the draft token least likely to be accepted (the last of the sample
    /// whose reach is lowest) while that raises goodput. Incremental: expected tokens, verified tokens, attended pairs
    /// and the draft chain's per-depth batch sizes are updated per drop, so a step costs O(drops · (log B + depth)).
    /// </summary>
    private double TrimChains(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, double[][] reach)
    {
        bool draftModel = s.Proposer == ProposerKind.DraftModel;
        int maxDepth = depths.Length == 0 ? 0 : depths.Max();
        var counts = new int[maxDepth + 2]; // counts[j] = samples drafting at least j tokens
        double tokens = 0, verify = 0, pairs = 0;
        int drafting = 0, catchUp = 0; // catch-up: tokens the draft's first forward feeds (each drafting sample's lag)
        var queue = new PriorityQueue<int, double>();
        for (int i = 0; i < depths.Length; i++)
        {
            int d = depths[i];
            double ctx = samples[i].ContextLength;
            tokens += Math.Min(1 + Sum(reach[i], d), Math.Max(1, samples[i].RemainingTokens));
            verify += 1 + d;
            pairs += (1.0 + d) * (ctx + (1 + d) / 2.0);
            for (int j = 1; j <= d; j++) counts[j]++;
            if (d > 0) { drafting++; catchUp += Math.Max(1, samples[i].DraftLag); queue.Enqueue(i, reach[i][d]); }
        }
        // The draft model's forward time per batch size 0..B, looked up per depth at every drop (the same numbers as
        // calling the curve there, without walking its knots depth × drops times).
        var draftForward = draftModel && drafting > 0 ? new double[depths.Length + 1] : [];
        for (int n = 1; n < draftForward.Length; n++) draftForward[n] = _cost.Draft.Predict(n);
        double DraftTime()
        {
            if (drafting == 0) return 0;
            if (!draftModel) return _cost.DraftSeconds(s, drafting);
            double t = _cost.Draft.Predict(Math.Max(catchUp, counts[1]));
            for (int j = 2; j < counts.Length && counts[j] > 0; j++) t += draftForward[counts[j]];
            return t;
        }
        double seconds = DraftTime() + StepSeconds((int)verify, pairs);
        double goodput = seconds > 0 ? tokens / seconds : 0;
        while (queue.TryDequeue(out int i, out _))
        {
            int d = depths[i];
            double ctx = samples[i].ContextLength;
            double newTokens = tokens - (Math.Min(1 + Sum(reach[i], d), Math.Max(1, samples[i].RemainingTokens)) - Math.Min(1 + Sum(reach[i], d - 1), Math.Max(1, samples[i].RemainingTokens)));
            double newVerify = verify - 1;
            double newPairs = pairs - (1.0 + d) * (ctx + (1 + d) / 2.0) + d * (ctx + d / 2.0);
            int lag = Math.Max(1, samples[i].DraftLag);
            counts[d]--;
            if (d == 1) { drafting--; catchUp -= lag; }
            double newSeconds = DraftTime() + StepSeconds((int)newVerify, newPairs);
            double g = newSeconds > 0 ? newTokens / newSeconds : 0;
            if (g <= goodput)
            {
                counts[d]++;
                if (d == 1) { drafting++; catchUp += lag; }
                return goodput;
            }
            depths[i] = d - 1;
            (tokens, verify, pairs, goodput) = (newTokens, newVerify, newPairs, g);
            if (d - 1 > 0) queue.Enqueue(i, reach[i][d - 1]);
        }
        return goodput;
    }
}
