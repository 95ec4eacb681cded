namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// Measured time of one forward pass as a function of the tokens it processes: a piecewise-linear curve through
/// knots at 1, 2, 4, … tokens (flat while the pass is bound by reading weights, then rising once it is bound by
/// compute), extrapolated along its last segment. Knots come from measurements only: <see cref="Observe"/> moves
/// the two knots around a measurement towards it (an exponential moving average), and unmeasured knots are
/// interpolated from measured neighbours.
/// </summary>
public sealed class TimeCurve
{
    private readonly double[] _tokens;
    private readonly double[] _seconds;
    private readonly double[] _weight; // how much measurement backs each knot
    private int[]? _measured; // [first, last, last-but-one] measured knot (−1: none); null when stale; replaced whole, so a reader on another thread sees one consistent set

    public TimeCurve(int maxTokens = 1024)
    {
        if (maxTokens < 1) throw new ArgumentOutOfRangeException(nameof(maxTokens), $"maxTokens {maxTokens}: must be >= 1");
        var knots = new List<double>();
        for (double t = 1; t < maxTokens; t *= 2) knots.Add(t);
        knots.Add(maxTokens);
        _tokens = knots.ToArray();
        _seconds = new double[_tokens.Length];
        _weight = new double[_tokens.Length];
    }

    internal TimeCurve(double[] tokens, double[] seconds, double[] weight)
    {
        if (tokens.Length == 0 || tokens.Length != seconds.Length || tokens.Length != weight.Length)
            throw new ArgumentException("time curve: knots, seconds and weights must be non-empty and the same length");
        for (int i = 0; i < tokens.Length; i++)
        {
            if (!(tokens[i] >= 1) || (i > 0 && tokens[i] <= tokens[i - 1])) throw new ArgumentException($"time curve: knot {i} = {tokens[i]} must be >= 1 and increasing");
            if (!double.IsFinite(seconds[i]) || seconds[i] < 0 || !double.IsFinite(weight[i]) || weight[i] < 0)
                throw new ArgumentException($"time curve: knot {i} has seconds {seconds[i]} and weight {weight[i]}: must be finite and >= 0");
        }
        _tokens = tokens;
        _seconds = seconds;
        _weight = weight;
    }

    public IReadOnlyList<double> Knots => _tokens;
    public IReadOnlyList<double> Seconds => _seconds;
    public IReadOnlyList<double> Weights => _weight;

    /// <summary>True once any measurement has been taken.</summary>
    public bool IsMeasured => (_measured ??= MeasuredKnots())[0] >= 0;

    /// <summary>
    /// Folds a measurement in: <paramref name="rate"/> is the EMA rate once a knot is established. Each of the two
    /// knots around <paramref name="tokens"/> moves towards the measurement carried to its own size along the curve's
    /// current shape (seconds × Predict(knot) / Predict(tokens)), so a measurement between knots, or beyond the last
    /// one, scales the curve there rather than flattening it: a 2,296-token step recorded as the 1,024-token knot's
    /// time (the clamp this replaced) doubled every later prediction of a 1,024-token step.
    /// </summary>
    public void Observe(double tokens, double seconds, double rate = 0.2)
    {
        if (!(tokens > 0) || !double.IsFinite(seconds) || seconds < 0) return;
        double at = Math.Clamp(tokens, _tokens[0], _tokens[^1]);
        var (lo, hi, f) = Locate(at);
        // Beyond the last knot the measurement counts fully towards it; below the first, towards the first.
        double loSeconds = Carried(seconds, tokens, _tokens[lo]), hiSeconds = Carried(seconds, tokens, _tokens[hi]);
        Blend(lo, loSeconds, (1 - f), rate);
        if (hi != lo) Blend(hi, hiSeconds, f, rate);
    }

    /// <summary>A measurement of <paramref name="seconds"/> at <paramref name="from"/> tokens, carried along the curve's shape to <paramref name="to"/> tokens.</summary>
    private double Carried(double seconds, double from, double to)
    {
        if (from == to || !IsMeasured) return seconds;
        double pFrom = Predict(from), pTo = Predict(to);
        return pFrom > 0 && pTo > 0 ? seconds * pTo / pFrom : seconds;
    }

    /// <summary>
    /// Most that one measurement counts as differing from an established knot, as a factor either way: a pause of the
    /// machine during a 0.3 ms draft forward (one took 55 ms) moved its knot 30× with the plain average, and chains
    /// looked too slow to draft for the next ten steps. A lasting change is still learnt, by up to rate × (factor − 1)
    /// a measurement.
    /// </summary>
    private const double MaxMeasurementFactor = 2;

    private void Blend(int knot, double seconds, double share, double rate)
    {
        if (share <= 0) return;
        // A fresh knot takes the first measurement outright; then it moves by rate × share.
        if (_weight[knot] > 0 && _seconds[knot] > 0)
            seconds = Math.Clamp(seconds, _seconds[knot] / MaxMeasurementFactor, _seconds[knot] * MaxMeasurementFactor);
        double alpha = _weight[knot] == 0 ? 1 : Math.Min(1, rate * share);
        _seconds[knot] += alpha * (seconds - _seconds[knot]);
        _weight[knot] += share;
        _measured = null;
    }

    /// <summary>Predicted seconds for a pass over <paramref name="tokens"/> tokens.</summary>
    public double Predict(double tokens)
    {
        // Flat below the smallest measured size (a pass never gets cheaper than that); linear between measured
        // knots; beyond the largest, along the last measured segment (or proportional with a single knot).
        // Allocation-free: the selector calls this many times a step.
        var measured = _measured ??= MeasuredKnots();
        int first = measured[0], last = measured[1], prev = measured[2];
        if (first < 0) throw new InvalidOperationException("time curve has no measurements: profile the device first");
        if (tokens <= _tokens[first]) return _seconds[first];
        if (tokens >= _tokens[last])
        {
            if (prev < 0) return _seconds[last] * tokens / _tokens[last];
            // A forward's time is flat while weights bound it and then rises ever more steeply (a convex curve), so
            // its slope beyond the last knot is at least the chord's from the first measured knot. A noisy last
            // segment is not: a profile that measured 118 ms at both 128 and 256 tokens predicted a 2,288-token
            // step at 118 ms, and it took 1.23 s.
            double slope = (_seconds[last] - _seconds[prev]) / (_tokens[last] - _tokens[prev]);
            double chord = (_seconds[last] - _seconds[first]) / (_tokens[last] - _tokens[first]);
            return _seconds[last] + Math.Max(0, Math.Max(slope, chord)) * (tokens - _tokens[last]);
        }
        int a = first;
        for (int i = first + 1; i <= last; i++)
        {
            if (_weight[i] <= 0) continue;
            if (_tokens[i] >= tokens)
            {
                double f = (tokens - _tokens[a]) / (_tokens[i] - _tokens[a]);
                return _seconds[a] + f * (_seconds[i] - _seconds[a]);
            }
            a = i;
        }
        return _seconds[last];
    }

    private int[] MeasuredKnots()
    {
        int first = -1, last = -1, prev = -1;
        for (int i = 0; i < _tokens.Length; i++)
        {
            if (_weight[i] <= 0) continue;
            if (first < 0) first = i;
            prev = last;
            last = i;
        }
        return [first, last, prev];
    }

    private (int Lo, int Hi, double Fraction) Locate(double tokens)
    {
        int hi = Array.FindIndex(_tokens, t => t >= tokens);
        if (hi <= 0) return (0, 0, 0);
        int lo = hi - 1;
        return (lo, hi, (tokens - _tokens[lo]) / (_tokens[hi] - _tokens[lo]));
    }
}
