using RLHFSpec.Compute.Drafting;
namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// Online acceptance statistics: for each proposer family (proposer, shape, top-k) and depth d, the probability
/// that verification accepts a token at depth d given that it accepted depth d − 1. Pooled over samples (with a
/// slow exponential forgetting, as the policy drifts during RLHF) and per sample, shrunk towards the pool when a
/// sample has few observations. Depth 1's pooled rate starts at a uniform prior; each deeper depth's is shrunk towards
/// the rate of the depth before it. The expected accepted length of a draft of depth D is Σ_{d ≤ D} Π_{i ≤ d} rate(i).
/// With <c>optimism</c> z &gt; 0, decisions (<c>optimistic: true</c>) use an upper confidence bound on depth 1,
/// rate + z·√(rate(1 − rate)/(n + 1)) with n the pooled attempts at depth 1: a family never tried, or tried
/// little, looks promising enough to be tried, so the selector cannot lock itself into <c>off</c> on its prior
/// alone; the bonus fades as observations come in (a step of B samples brings B of them).
/// </summary>
public sealed class AcceptanceEstimator(double forgetting = 0.995, double sampleWeight = 4, double optimism = 0)
{
    /// <summary>Pseudo-attempts with which a depth's rate is pulled towards the rate of the depth before it.</summary>
    private const double DepthPriorWeight = 2;

    /// <summary>Upper bound of an optimistic rate (a draft is never certain to be accepted).</summary>
    private const double MaxOptimisticRate = 0.95;

    /// <summary>Strategies that share their per-depth acceptance: the proposer, the draft shape and a tree's top-k.</summary>
    internal readonly record struct Family(ProposerKind Proposer, DraftShape Shape, int TopK);

    private sealed class Counts
    {
        public double[] Attempts = new double[Strategy.MaxDraftTokens + 1];
        public double[] Accepts = new double[Strategy.MaxDraftTokens + 1];
    }

    private readonly Dictionary<Family, Counts> _pooled = new();
    private readonly Dictionary<(long Sample, Family Family), Counts> _perSample = new();

    internal static Family FamilyOf(Strategy s) => new(s.Proposer, s.Shape, s.Shape == DraftShape.Tree ? s.TopK : 1);

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

    /// <summary>
    /// Pooled attempts (aged by the forgetting) at <paramref name="depth"/> of <paramref name="strategy"/>'s family:
    /// how much its rate there rests on observations rather than on the depth before it.
    /// </summary>
    public double PooledAttempts(Strategy strategy, int depth)
    {
        if (strategy.IsOff || depth < 1 || depth > Strategy.MaxDraftTokens) return 0;
        return _pooled.TryGetValue(FamilyOf(strategy), out var p) ? p.Attempts[depth] : 0;
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
        Span<double> rates = stackalloc double[depth + 1];
        FillRates(strategy, sampleId, optimistic, rates);
        return rates[depth];
    }

    /// <summary>
    /// reach[d] = probability of accepting at least d draft tokens, for d = 0 … reach.Length − 1 (reach[0] = 1): the
    /// products of <see cref="Rate"/>, computed in one pass over the depths (the selector asks for every live sample).
    /// </summary>
    public void FillReach(Strategy strategy, long? sampleId, bool optimistic, Span<double> reach)
    {
        if (reach.Length - 1 > Strategy.MaxDraftTokens) throw new ArgumentOutOfRangeException(nameof(reach), $"depth {reach.Length - 1}: must be at most {Strategy.MaxDraftTokens}");
        FillRates(strategy, sampleId, optimistic, reach);
        reach[0] = 1;
        for (int d = 1; d < reach.Length; d++) reach[d] *= reach[d - 1];
    }

    /// <summary>rates[d] = <see cref="Rate"/>(strategy, d) for d = 1 … rates.Length − 1 (rates[0] is left alone).</summary>
    private void FillRates(Strategy strategy, long? sampleId, bool optimistic, Span<double> rates)
    {
        var family = FamilyOf(strategy);
        Counts? mine = null;
        if (sampleId is not null) _perSample.TryGetValue((sampleId.Value, family), out mine);
        _pooled.TryGetValue(family, out var p);
        double pool = 0.5, attempts = p?.Attempts[1] ?? 0;
        for (int d = 1; d < rates.Length; d++)
        {
            // Depth 1 starts at a uniform prior; each deeper depth is shrunk towards the rate of the depth before it
            // (a prior of DepthPriorWeight attempts), not towards 1/2: a deep depth is reached only when the shallower
            // ones were accepted, so it stays little observed, and a proposer whose drafts are mostly rejected (the
            // suffix drafts here: 12 % per token) looked like a coin flip from depth 2 on.
            if (p is not null)
                pool = d == 1 ? (p.Accepts[1] + 1) / (p.Attempts[1] + 2) : (p.Accepts[d] + DepthPriorWeight * pool) / (p.Attempts[d] + DepthPriorWeight);
            double rate = mine is null ? pool : (mine.Accepts[d] + sampleWeight * pool) / (mine.Attempts[d] + sampleWeight);
            // Optimism at depth 1 only: deeper depths follow it through the product of rates, with their plain estimates.
            // An untried family then looks worth a shallow try, not like a deep tree accepted at 95 % per level (which
            // the selector tried at a live batch of 256, a step costing many times a decode step).
            if (d == 1 && optimistic && optimism > 0)
                rate = Math.Max(rate, Math.Min(MaxOptimisticRate, rate + optimism * Math.Sqrt(rate * (1 - rate) / (attempts + 1))));
            rates[d] = rate;
        }
    }

    /// <summary>Probability of accepting at least <paramref name="depth"/> tokens.</summary>
    public double ReachProbability(Strategy strategy, int depth, long? sampleId = null, bool optimistic = false)
    {
        if (depth <= 0) return 1;
        Span<double> reach = stackalloc double[depth + 1];
        FillReach(strategy, sampleId, optimistic, reach);
        return reach[depth];
    }

    /// <summary>Expected accepted draft tokens for a draft of <paramref name="depth"/> (default: the strategy's depth).</summary>
    public double ExpectedAccepted(Strategy strategy, long? sampleId = null, int? depth = null, bool optimistic = false)
    {
        if (strategy.IsOff) return 0;
        int maxDepth = depth ?? strategy.Depth;
        if (maxDepth <= 0) return 0;
        Span<double> reach = stackalloc double[maxDepth + 1];
        FillReach(strategy, sampleId, optimistic, reach);
        double expected = 0;
        for (int d = 1; d <= maxDepth; d++) expected += reach[d];
        return expected;
    }

    private static Counts Get<TKey>(Dictionary<TKey, Counts> map, TKey key) where TKey : notnull
    {
        if (!map.TryGetValue(key, out var c)) map[key] = c = new Counts();
        return c;
    }
}
