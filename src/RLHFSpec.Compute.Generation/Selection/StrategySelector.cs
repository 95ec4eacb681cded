namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// Workload-aware strategy selection: each step, for the live batch, the candidate (always including
/// <c>off</c>) with the highest expected goodput = Σ_samples E[accepted + 1] / (T_draft + T_verify + T_overhead), from the
/// measured <see cref="CostModel"/> and the online <see cref="AcceptanceEstimator"/>. With few samples left the
/// verification pass costs about the same for many more tokens, so deep drafts win; with a full batch every extra
/// token costs compute, so short chains or <c>off</c> win. For chains it then trims each sample's length greedily
/// (dropping the draft token least likely to be accepted while that raises goodput), so confident samples draft
/// deeper than doubtful ones in the same step.
/// </summary>
public sealed class StrategySelector
{
    private readonly CostModel _cost;
    private readonly AcceptanceEstimator _acceptance;
    private readonly Strategy[] _candidates;
    private readonly bool _perSampleLengths;

    public StrategySelector(CostModel cost, AcceptanceEstimator acceptance, IEnumerable<Strategy> candidates, bool perSampleLengths = true)
    {
        _cost = cost;
        _acceptance = acceptance;
        _candidates = candidates.Prepend(Strategy.Off).Distinct().ToArray();
        _perSampleLengths = perSampleLengths;
    }

    public IReadOnlyList<Strategy> Candidates => _candidates;

    public StepPlan Choose(IReadOnlyList<LiveSample> samples)
    {
        if (samples.Count == 0) return new StepPlan(Strategy.Off, [], 0, 0, []);
        var predictions = new List<(Strategy, double)>();
        Strategy best = Strategy.Off;
        int[] bestDepths = new int[samples.Count];
        double bestGoodput = double.NegativeInfinity, offGoodput = 0;
        foreach (var s in _candidates)
        {
            var depths = samples.Select(x => s.IsOff ? 0 : Math.Min(s.Depth, Math.Max(0, x.RemainingTokens - 1))).ToArray();
            double g = Goodput(s, samples, depths);
            if (_perSampleLengths && s.Shape == DraftShape.Chain) g = TrimChains(s, samples, depths, g);
            predictions.Add((s, g));
            if (s.IsOff) offGoodput = g;
            if (g > bestGoodput) { best = s; bestGoodput = g; bestDepths = depths; }
        }
        return new StepPlan(best, bestDepths, bestGoodput, offGoodput, predictions);
    }

    /// <summary>Predicted tokens per second of drafting <paramref name="depths"/> with <paramref name="s"/>.</summary>
    public double Goodput(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths)
    {
        var (tokensOut, seconds) = Predict(s, samples, depths);
        return seconds > 0 ? tokensOut / seconds : 0;
    }

    /// <summary>Expected tokens emitted and seconds taken by one step drafting <paramref name="depths"/> with <paramref name="s"/>.</summary>
    public (double Tokens, double Seconds) Predict(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths)
    {
        double tokensOut = 0, verifyTokens = 0, pairs = 0;
        int drafting = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            var x = samples[i];
            int nodes = s.Shape == DraftShape.Tree && depths[i] > 0 ? s.Budget : depths[i];
            tokensOut += ExpectedTokens(s, x, depths[i]);
            verifyTokens += 1 + nodes;
            pairs += (1.0 + nodes) * (x.ContextLength + (1 + nodes) / 2.0);
            if (depths[i] > 0) drafting++;
        }
        double draft = s.IsOff || drafting == 0 ? 0
            : s.Proposer == ProposerKind.DraftModel && s.Shape == DraftShape.Chain ? _cost.DraftChainSeconds(depths)
            : _cost.DraftSeconds(s, drafting);
        return (tokensOut, draft + _cost.VerifySeconds((int)verifyTokens, pairs) + _cost.StepOverheadSeconds((int)verifyTokens));
    }

    /// <summary>Expected tokens a sample emits in one step: accepted drafts plus the next token, capped by what it still needs.</summary>
    public double ExpectedTokens(Strategy s, LiveSample sample, int depth)
    {
        double expected = depth == 0 ? 0 : _acceptance.ExpectedAccepted(s, sample.SampleId, depth, optimistic: true);
        return Math.Min(expected + 1, Math.Max(1, sample.RemainingTokens));
    }

    private double TrimChains(Strategy s, IReadOnlyList<LiveSample> samples, int[] depths, double goodput)
    {
        while (true)
        {
            // The last draft token of each sample is accepted with its reach probability; drop the least likely.
            int worst = -1;
            double worstReach = double.PositiveInfinity;
            for (int i = 0; i < depths.Length; i++)
            {
                if (depths[i] == 0) continue;
                double reach = _acceptance.ReachProbability(s, depths[i], samples[i].SampleId, optimistic: true);
                if (reach < worstReach) { worstReach = reach; worst = i; }
            }
            if (worst < 0) return goodput;
            depths[worst]--;
            double g = Goodput(s, samples, depths);
            if (g <= goodput)
            {
                depths[worst]++;
                return goodput;
            }
            goodput = g;
        }
    }
}
