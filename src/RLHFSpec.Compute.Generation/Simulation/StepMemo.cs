using RLHFSpec.Compute.Generation.Selection;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// The simulator's memory of step outcomes. Within one run the selector's inputs other than the batch do not change
/// (the simulator observes nothing), so a step's predicted seconds and each sample's expected tokens are a function
/// of the live batch, in order, as far as the selector reads it (<see cref="StrategySelector.BatchKeyOf"/>): each
/// sample's remaining tokens up to the deepest draft + 1 (more cannot change a depth or a capped token count), its
/// context where attended pairs cost time, its id where the acceptance statistics tell samples apart. Lengths come
/// from one task, so at 10⁵ instances most batches recur; a recurring one is looked up instead of chosen again, with
/// the very numbers the selector gave. Bounded: two generations of at most <c>capacity</c> entries each, the older
/// dropped when the newer fills (entries found in the older are carried over). A lookup allocates nothing.
/// </summary>
internal sealed class StepMemo(int capacity = 1 << 17)
{
    /// <summary>A batch as its samples' selector-visible values, hashed once; the probe's values are reused per lookup.</summary>
    private sealed class BatchKey : IEquatable<BatchKey>
    {
        private long[] _values;
        private int _length, _hash;

        public BatchKey(long[] values, int length, int hash) => (_values, _length, _hash) = (values, length, hash);

        public ReadOnlySpan<long> Values => _values.AsSpan(0, _length);

        /// <summary>The probe's buffer, at least <paramref name="length"/> long; <see cref="Seal"/> after filling it.</summary>
        public Span<long> Fill(int length)
        {
            if (_values.Length < length) _values = new long[Math.Max(length, 2 * _values.Length)];
            _length = length;
            return _values.AsSpan(0, length);
        }

        public void Seal()
        {
            var h = new HashCode();
            foreach (long v in Values) h.Add(v);
            _hash = h.ToHashCode();
        }

        public BatchKey Copy() => new(Values.ToArray(), _length, _hash);

        public bool Equals(BatchKey? other) => other is not null && other._hash == _hash && other.Values.SequenceEqual(Values);
        public override bool Equals(object? obj) => Equals(obj as BatchKey);
        public override int GetHashCode() => _hash;
    }

    /// <summary>A step's predicted seconds (before the simulator's overhead and prefill terms) and each sample's expected tokens.</summary>
    public sealed record Outcome(double Seconds, double[] Tokens);

    private Dictionary<BatchKey, Outcome> _current = new(), _older = new();
    private readonly BatchKey _probe = new(new long[16], 0, 0);

    public long Hits { get; private set; }
    public long Misses { get; private set; }

    /// <summary>
    /// The outcome of <paramref name="selector"/>'s step over <paramref name="views"/>: remembered, else
    /// <paramref name="compute"/>d and remembered.
    /// </summary>
    public Outcome Get(LiveSample[] views, StrategySelector selector, Func<LiveSample[], Outcome> compute)
    {
        selector.BatchKeyOf(views, _probe.Fill(selector.BatchKeyLength(views.Length)));
        _probe.Seal();
        if (_current.TryGetValue(_probe, out var outcome))
        {
            Hits++;
            return outcome;
        }
        var key = _probe.Copy();
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
