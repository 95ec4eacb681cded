using RLHFSpec.Compute.Generation.Selection;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// The simulator's memory of step outcomes. Within one run the selector's inputs other than the batch do not change
/// (the simulator observes nothing), so a step's predicted seconds and each sample's expected tokens are a function
/// of the live batch: each sample's context and remaining tokens, in order, and its id where the selector's
/// acceptance statistics tell samples apart (<see cref="StrategySelector.DependsOnSampleIds"/>). Lengths come from
/// one task, so at 10⁵ instances most batches recur; a recurring one is looked up instead of chosen again, with the
/// very numbers the selector gave. Bounded: two generations of at most <c>capacity</c> entries each, the older
/// dropped when the newer fills (entries found in the older are carried over).
/// </summary>
internal sealed class StepMemo(int capacity = 1 << 17)
{
    /// <summary>A batch as its samples' (context, remaining tokens[, id]) in order, hashed once.</summary>
    private sealed class BatchKey(long[] values) : IEquatable<BatchKey>
    {
        private readonly int _hash = Hash(values);
        private readonly long[] _values = values;

        private static int Hash(long[] values)
        {
            var h = new HashCode();
            foreach (long v in values) h.Add(v);
            return h.ToHashCode();
        }

        public bool Equals(BatchKey? other) => other is not null && other._hash == _hash && other._values.AsSpan().SequenceEqual(_values);
        public override bool Equals(object? obj) => Equals(obj as BatchKey);
        public override int GetHashCode() => _hash;
    }

    /// <summary>A step's predicted seconds (before the simulator's overhead and prefill terms) and each sample's expected tokens.</summary>
    public sealed record Outcome(double Seconds, double[] Tokens);

    private Dictionary<BatchKey, Outcome> _current = new(), _older = new();

    public long Hits { get; private set; }
    public long Misses { get; private set; }

    /// <summary>The outcome of a step over <paramref name="views"/>: remembered, else <paramref name="compute"/>d and remembered.</summary>
    public Outcome Get(LiveSample[] views, bool withIds, Func<LiveSample[], Outcome> compute)
    {
        var values = new long[views.Length * (withIds ? 3 : 2)];
        int k = 0;
        foreach (var v in views)
        {
            values[k++] = v.ContextLength;
            values[k++] = v.RemainingTokens;
            if (withIds) values[k++] = v.SampleId;
        }
        var key = new BatchKey(values);
        if (_current.TryGetValue(key, out var outcome))
        {
            Hits++;
            return outcome;
        }
        if (_older.Remove(key, out outcome)) Hits++;
        else
        {
            Misses++;
            outcome = compute(views);
        }
        if (_current.Count >= capacity)
        {
            _older = _current;
            _current = new Dictionary<BatchKey, Outcome>();
        }
        _current[key] = outcome;
        return outcome;
    }
}
