namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// Online acceptance statistics: for each proposer family (proposer, shape, top-k) and depth d, the probability
/// that verification accepts a token at depth d given that it accepted depth d − 1. Pooled over samples (with a
/// slow exponential forgetting, as the policy drifts during RLHF) and per sample, shrunk towards the pool when a
/// sample has few observations. The expected accepted length of a draft of depth D is
/// Σ_{d ≤ D} Π_{i ≤ d} rate(i).
/// With <c>optimism</c> z &gt; 0, decisions (<c>optimistic: true</c>) use an upper confidence bound,
/// rate + z·√(rate(1 − rate)/(n + 1)) with n the pooled attempts at that depth: a family never tried, or tried
/// little, looks promising enough to be tried, so the selector cannot lock itself into <c>off</c> on its prior
/// alone; the bonus fades as observations come in (a step of B samples brings B of them).
/// </summary>
public sealed class AcceptanceEstimator(double forgetting = 0.995, double sampleWeight = 4, double optimism = 0)
{
    /// <summary>Upper bound of an optimistic rate (a draft is never certain to be accepted).</summary>
    private const double MaxOptimisticRate = 0.95;

    private readonly record struct Family(ProposerKind Proposer, DraftShape Shape, int TopK);

    private sealed class Counts
    {
        public double[] Attempts = new double[Strategy.MaxDraftTokens + 1];
        public double[] Accepts = new double[Strategy.MaxDraftTokens + 1];
    }

    private readonly Dictionary<Family, Counts> _pooled = new();
    private readonly Dictionary<(long Sample, Family Family), Counts> _perSample = new();

    private static Family FamilyOf(Strategy s) => new(s.Proposer, s.Shape, s.Shape == DraftShape.Tree ? s.TopK : 1);

    /// <summary>
    /// Records one verification: the sample's draft reached <paramref name="draftDepth"/> and
    /// <paramref name="accepted"/> tokens were accepted, so depths 1..accepted succeeded and depth accepted + 1
    /// (if drafted) failed; deeper depths were not tried.
    /// </summary>
    public void Observe(long sampleId, Strategy strategy, int draftDepth, int accepted)
    {
        if (strategy.IsOff || draftDepth <= 0) return;
        if (accepted < 0 || accepted > draftDepth) throw new ArgumentOutOfRangeException(nameof(accepted), $"accepted {accepted}: must be in [0, {draftDepth}]");
        var family = FamilyOf(strategy);
        var pooled = Get(_pooled, family);
        var mine = Get(_perSample, (sampleId, family));
        int tried = Math.Min(draftDepth, accepted + 1);
        for (int d = 1; d <= tried; d++)
        {
            double success = d <= accepted ? 1 : 0;
            pooled.Attempts[d] += 1; pooled.Accepts[d] += success;
            mine.Attempts[d] += 1; mine.Accepts[d] += success;
        }
    }

    /// <summary>Whether any sample has statistics of its own (else a rate depends on the family and depth only, not the sample).</summary>
    public bool HasSampleStatistics => _perSample.Count > 0;

    /// <summary>Ages the pooled statistics by one step.</summary>
    public void EndStep()
    {
        foreach (var c in _pooled.Values)
            for (int d = 0; d < c.Attempts.Length; d++) { c.Attempts[d] *= forgetting; c.Accepts[d] *= forgetting; }
    }

    /// <summary>Forgets a finished sample's own statistics.</summary>
    public void Forget(long sampleId)
    {
        foreach (var key in _perSample.Keys.Where(k => k.Sample == sampleId).ToList()) _perSample.Remove(key);
    }

    /// <summary>P(accept depth d | accepted d − 1) for a sample (null: the pool only). Unseen: a uniform prior (1/2).</summary>
    public double Rate(Strategy strategy, int depth, long? sampleId = null, bool optimistic = false)
    {
        if (depth < 1 || depth > Strategy.MaxDraftTokens) throw new ArgumentOutOfRangeException(nameof(depth), $"depth {depth}: must be in [1, {Strategy.MaxDraftTokens}]");
        var family = FamilyOf(strategy);
        double pool = 0.5, attempts = 0;
        if (_pooled.TryGetValue(family, out var p)) { pool = (p.Accepts[depth] + 1) / (p.Attempts[depth] + 2); attempts = p.Attempts[depth]; }
        double rate = pool;
        if (sampleId is not null && _perSample.TryGetValue((sampleId.Value, family), out var s))
            rate = (s.Accepts[depth] + sampleWeight * pool) / (s.Attempts[depth] + sampleWeight);
        if (!optimistic || optimism <= 0) return rate;
        return Math.Max(rate, Math.Min(MaxOptimisticRate, rate + optimism * Math.Sqrt(rate * (1 - rate) / (attempts + 1))));
    }

    /// <summary>Probability of accepting at least <paramref name="depth"/> tokens.</summary>
    public double ReachProbability(Strategy strategy, int depth, long? sampleId = null, bool optimistic = false)
    {
        double p = 1;
        for (int d = 1; d <= depth; d++) p *= Rate(strategy, d, sampleId, optimistic);
        return p;
    }

    /// <summary>Expected accepted draft tokens for a draft of <paramref name="depth"/> (default: the strategy's depth).</summary>
    public double ExpectedAccepted(Strategy strategy, long? sampleId = null, int? depth = null, bool optimistic = false)
    {
        if (strategy.IsOff) return 0;
        double expected = 0, reach = 1;
        int maxDepth = depth ?? strategy.Depth;
        for (int d = 1; d <= maxDepth; d++)
        {
            reach *= Rate(strategy, d, sampleId, optimistic);
            expected += reach;
        }
        return expected;
    }

    private static Counts Get<TKey>(Dictionary<TKey, Counts> map, TKey key) where TKey : notnull
    {
        if (!map.TryGetValue(key, out var c)) map[key] = c = new Counts();
        return c;
    }
}
