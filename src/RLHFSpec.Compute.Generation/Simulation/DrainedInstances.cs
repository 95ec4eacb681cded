using RLHFSpec.Compute.Generation.Cluster;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// The simulator's drained instances for <see cref="Reallocator.PlanDrained(InstanceLoad, IDrainedReceivers)"/>:
/// the empty ones in a segment tree over instance indices that keeps, per subtree, the least fixed and per-sample
/// seconds per emitted token of their step times, so a bound on how fast any of them could finish a plan's samples
/// rules out whole subtrees; the loaded ones ordered by (predicted work, index). A change costs O(log N); finding the
/// next empty instance that could take a plan costs O(log N) per instance returned.
/// </summary>
internal sealed class DrainedInstances : IDrainedReceivers
{
    /// <summary>Relative margin on the bound: rounding in <see cref="StepTime.Seconds"/> never skips a receiver that is fast enough.</summary>
    private const double BoundMargin = 1e-9;

    private readonly int _leaves;
    private readonly double[] _minFixed;     // per tree node: least FixedSeconds / TokensPerSampleStep of its known members
    private readonly double[] _minPerSample; // per tree node: least SecondsPerSample / TokensPerSampleStep of its known members
    private readonly int[] _members;         // per tree node: empty drained instances below it
    private readonly int[] _unknown;         // per tree node: of them, those with no step time yet (the donor's is used)
    private readonly (double Work, int Index)?[] _loadedKey;
    private readonly SortedSet<(double Work, int Index)> _loaded = new();
    private readonly Func<int, InstanceLoad> _load;

    /// <param name="count">Instances, indexed 0..count − 1.</param>
    /// <param name="load">An instance's load as a receiver (the caller caches it until the instance changes).</param>
    public DrainedInstances(int count, Func<int, InstanceLoad> load)
    {
        _leaves = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, count));
        _minFixed = new double[2 * _leaves];
        _minPerSample = new double[2 * _leaves];
        Array.Fill(_minFixed, double.PositiveInfinity);
        Array.Fill(_minPerSample, double.PositiveInfinity);
        _members = new int[2 * _leaves];
        _unknown = new int[2 * _leaves];
        _loadedKey = new (double, int)?[count];
        _load = load;
    }

    /// <summary>Instance <paramref name="index"/> is drained and empty, with step time <paramref name="time"/>.</summary>
    public void SetEmpty(int index, StepTime time)
    {
        RemoveLoaded(index);
        int leaf = _leaves + index;
        _members[leaf] = 1;
        _unknown[leaf] = time.IsKnown ? 0 : 1;
        (_minFixed[leaf], _minPerSample[leaf]) = time.IsKnown ? PerToken(time) : (double.PositiveInfinity, double.PositiveInfinity);
        Up(leaf);
    }

    /// <summary>Instance <paramref name="index"/> is drained and holds samples of <paramref name="work"/> (&gt; 0) predicted tokens.</summary>
    public void SetLoaded(int index, double work)
    {
        RemoveEmpty(index);
        RemoveLoaded(index);
        var key = (work, index);
        _loaded.Add(key);
        _loadedKey[index] = key;
    }

    /// <summary>Instance <paramref name="index"/> is not drained.</summary>
    public void Remove(int index)
    {
        RemoveEmpty(index);
        RemoveLoaded(index);
    }

    public IEnumerable<InstanceLoad> Loaded
    {
        get
        {
            foreach (var (_, index) in _loaded) yield return _load(index);
        }
    }

    public InstanceLoad? NextEmpty(int after, int donor, double longest, double total, double underSeconds, StepTime unknownAs)
    {
        var (unknownFixed, unknownPerSample) = unknownAs.IsKnown ? PerToken(unknownAs) : (double.NegativeInfinity, double.NegativeInfinity);
        int found = Find(1, 0, _leaves);
        return found < 0 ? null : _load(found);

        int Find(int node, int lo, int hi)
        {
            if (hi <= after + 1 || _members[node] == 0) return -1;
            if (double.IsFinite(underSeconds))
            {
                double a = _minFixed[node], b = _minPerSample[node];
                if (_unknown[node] > 0)
                {
                    a = Math.Min(a, unknownFixed);
                    b = Math.Min(b, unknownPerSample);
                }
                // A lower bound of every member's seconds for the samples; NaN (no bound) skips nothing.
                if ((longest * a + total * b) * (1 - BoundMargin) >= underSeconds) return -1;
            }
            if (hi - lo == 1) return lo == donor ? -1 : lo;
            int mid = (lo + hi) / 2;
            int left = Find(2 * node, lo, mid);
            return left >= 0 ? left : Find(2 * node + 1, mid, hi);
        }
    }

    /// <summary>Seconds per token of the fixed and per-sample parts; a part below 0 (no monotone bound) gives −∞, which skips nothing.</summary>
    private static (double Fixed, double PerSample) PerToken(StepTime t) =>
        t.FixedSeconds >= 0 && t.SecondsPerSample >= 0
            ? (t.FixedSeconds / t.TokensPerSampleStep, t.SecondsPerSample / t.TokensPerSampleStep)
            : (double.NegativeInfinity, double.NegativeInfinity);

    private void RemoveEmpty(int index)
    {
        int leaf = _leaves + index;
        if (_members[leaf] == 0) return;
        _members[leaf] = 0;
        _unknown[leaf] = 0;
        _minFixed[leaf] = _minPerSample[leaf] = double.PositiveInfinity;
        Up(leaf);
    }

    private void RemoveLoaded(int index)
    {
        if (_loadedKey[index] is not { } key) return;
        _loaded.Remove(key);
        _loadedKey[index] = null;
    }

    private void Up(int node)
    {
        for (node /= 2; node >= 1; node /= 2)
        {
            int l = 2 * node, r = l + 1;
            _members[node] = _members[l] + _members[r];
            _unknown[node] = _unknown[l] + _unknown[r];
            _minFixed[node] = Math.Min(_minFixed[l], _minFixed[r]);
            _minPerSample[node] = Math.Min(_minPerSample[l], _minPerSample[r]);
        }
    }
}
