using System.Text.Json;
using System.Text.Json.Serialization;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// Time of a step's parts on the running device, from measurements only: the target model's forward over n tokens
/// (verification, decode), plus a term per attended (query token × context token) pair; the draft model's forward
/// over n tokens; the suffix proposer's time per sample. Profiled briefly at start-up and refined online with
/// every step's measured times; <see cref="Save"/>/<see cref="Load"/> freeze a profile so decisions can be
/// reproduced (<c>--cost-profile FILE</c>). Everything else a step costs (choosing, the verify kernel, committing
/// KV and tokens) is the measured step overhead, a curve over the step's verified tokens learnt from the steps run.
/// </summary>
public sealed class CostModel : IDraftCostObserver
{
    private double _pairSxx, _pairSxy; // least squares of (seconds − curve) on attended pairs, with forgetting
    private AttentionFit _attention;     // measured attention seconds = fixed + rate × pairs

    /// <summary>
    /// Least squares of a forward's attention seconds on its attended pairs, with an intercept and forgetting. The
    /// intercept matters: attention costs a fixed amount per call (per layer, per dispatch) whatever the keys, and a fit
    /// through the origin made that a rate — 15 µs a pair after batch-1 steps with short contexts, where the keys cost
    /// about 1 µs — so a 28-row chain step at 4 samples was predicted at 3× its time and never chosen.
    /// </summary>
    private struct AttentionFit
    {
        private const double Forget = 0.98;
        private double _w, _x, _xx, _y, _xy;

        /// <summary>Adds one forward; returns the fitted rate per pair, or null while the pairs seen do not vary enough to tell it from the intercept.</summary>
        public double? Add(double pairs, double seconds)
        {
            _w = Forget * _w + 1;
            _x = Forget * _x + pairs;
            _xx = Forget * _xx + pairs * pairs;
            _y = Forget * _y + seconds;
            _xy = Forget * _xy + pairs * seconds;
            double spread = _w * _xx - _x * _x; // w² × the weighted variance of the pairs
            if (!(spread > 1e-6 * _w * _xx)) return null;
            double slope = (_w * _xy - _x * _y) / spread;
            // Between 0 and the fit through the origin, which is an upper bound when the fixed part is positive.
            return Math.Clamp(slope, 0, Math.Max(0, _xy / _xx));
        }
    }
    private readonly Dictionary<(string Class, int Bucket), (double Actual, double Predicted, double Weight)> _timeRatio = new();
    private readonly Lock _timeRatioLock = new();

    /// <summary>Forgetting of the measured step-time ratio per observed step (an effective window of ~10 steps).</summary>
    private const double RatioForgetting = 0.9;

    /// <summary>Weight, in steps, of the model's own prediction (ratio 1) against the measured ratio.</summary>
    public const double RatioPrior = 2;

    /// <summary>
    /// Ageing, per step observed, of every other class's and bucket's ratio: evidence that is not refreshed fades back to
    /// the curves' prediction (a class not run for ~100 steps is judged by the curves again, and so is tried again).
    /// </summary>
    private const double StaleForgetting = 0.98;

    /// <summary>
    /// Most that one step's ratio may differ from the current correction, as a factor either way: a single step 10×
    /// slower than predicted (a collection, a page fault storm, a tier-up) must not price a class out for good, while a
    /// lasting difference is still learnt within a few steps (the correction can double each step).
    /// </summary>
    private const double MaxStepRatioChange = 2;

    /// <summary>
    /// Largest forward the curves have a knot for by default: a step of 256 samples drafting 9 tokens each is 2,560
    /// tokens, and a measurement beyond the last knot can only scale it, not place a knot of its own.
    /// </summary>
    public const int DefaultMaxTokens = 1 << 16;

    public CostModel(string device, int maxTokens = DefaultMaxTokens)
    {
        Device = device;
        Target = new TimeCurve(maxTokens);
        Draft = new TimeCurve(maxTokens);
        Overhead = new TimeCurve(maxTokens);
    }

    private CostModel(string device, TimeCurve target, TimeCurve draft, TimeCurve overhead, double perPair, double suffix, bool frozen)
    {
        Device = device;
        Target = target;
        Draft = draft;
        Overhead = overhead;
        SecondsPerAttendedPair = perPair;
        SuffixSecondsPerSample = suffix;
        Frozen = frozen;
    }

    public string Device { get; }
    public TimeCurve Target { get; }
    public TimeCurve Draft { get; }

    /// <summary>A step's time outside the drafts and the target forward, by the step's verified tokens (0 until a step ran).</summary>
    public TimeCurve Overhead { get; }
    public double SecondsPerAttendedPair { get; private set; }
    public double SuffixSecondsPerSample { get; private set; }

    /// <summary>A loaded profile is frozen: observations no longer change it, so the selector's choices repeat.</summary>
    public bool Frozen { get; set; }

    /// <summary>Seconds of one target forward over <paramref name="tokens"/> tokens attending <paramref name="attendedPairs"/> (token, context) pairs.</summary>
    public double VerifySeconds(int tokens, double attendedPairs) => Target.Predict(tokens) + SecondsPerAttendedPair * attendedPairs;

    /// <summary>Predicted step overhead (selection, verify kernel, commit) of a step verifying <paramref name="tokens"/> tokens.</summary>
    public double StepOverheadSeconds(int tokens) => Overhead.IsMeasured ? Overhead.Predict(tokens) : 0;

    /// <summary>Records one step's overhead: its wall time less its drafting and its target forward.</summary>
    public void ObserveStepOverhead(int tokens, double seconds)
    {
        if (!Frozen) Overhead.Observe(tokens, Math.Max(0, seconds));
    }

    /// <summary>
    /// Seconds to draft <paramref name="strategy"/> for <paramref name="samples"/> samples: a draft-model chain of k is
    /// k sequential forwards over the batch; a draft-model tree of depth D, top-k K and budget B is one forward over the
    /// batch (the root's children), then for each depth d = 2..D one forward over the expanded part of every sample's
    /// tree so far — at most K nodes per depth and B in all, fed again each depth (see <see cref="DraftModelProposer"/>);
    /// the suffix proposer costs its measured time per sample. A draft model's first forward is its catch-up, feeding
    /// <paramref name="catchUpTokens"/> tokens (the tokens it has not seen; default one per sample).
    /// </summary>
    public double DraftSeconds(Strategy strategy, int samples, int? catchUpTokens = null)
    {
        if (strategy.IsOff || samples == 0) return 0;
        double CatchUp() => Draft.Predict(Math.Max(catchUpTokens ?? samples, samples));
        return strategy.Proposer switch
        {
            ProposerKind.Suffix => samples * SuffixSecondsPerSample,
            ProposerKind.DraftModel when strategy.Shape == DraftShape.Chain => CatchUp() + (strategy.Depth - 1) * Draft.Predict(samples),
            ProposerKind.DraftModel => DraftTreeSeconds(strategy, samples, CatchUp()),
            _ => 0,
        };
    }

    private double DraftTreeSeconds(Strategy strategy, int samples, double catchUp)
    {
        double total = catchUp;
        for (int d = 2; d <= strategy.Depth; d++)
            total += Draft.Predict((double)samples * Math.Min(strategy.TopK * (d - 1), strategy.Budget));
        return total;
    }

    /// <summary>
    /// Draft-model chains of per-sample lengths: forward j runs over the samples still drafting at depth j; the first
    /// is the catch-up, feeding <paramref name="catchUpTokens"/> tokens (default: one per drafting sample).
    /// </summary>
    public double DraftChainSeconds(IReadOnlyList<int> lengths, int? catchUpTokens = null)
    {
        double total = 0;
        int max = lengths.Count == 0 ? 0 : lengths.Max();
        for (int j = 1; j <= max; j++)
        {
            int drafting = lengths.Count(k => k >= j);
            total += Draft.Predict(j == 1 && catchUpTokens is { } c ? Math.Max(c, drafting) : drafting);
        }
        return total;
    }

    /// <summary>
    /// Records one verify forward of <paramref name="tokens"/> tokens attending <paramref name="attendedPairs"/>
    /// (query, key) pairs. With the forward's measured <paramref name="attentionSeconds"/> the attention rate per pair
    /// and the token curve each learn from their own part; without it both are fitted to the total.
    /// </summary>
    public void ObserveVerify(int tokens, double attendedPairs, double seconds, double? attentionSeconds = null)
    {
        if (Frozen) return;
        if (attentionSeconds is { } attention && attention >= 0 && attention <= seconds)
        {
            if (attendedPairs > 0 && _attention.Add(attendedPairs, attention) is { } rate) SecondsPerAttendedPair = rate;
            // Attention's fixed part (its calls, whatever the keys) stays in the token curve with the dense layers.
            Target.Observe(tokens, Math.Max(0, seconds - SecondsPerAttendedPair * attendedPairs));
            return;
        }
        Target.Observe(tokens, Math.Max(0, seconds - SecondsPerAttendedPair * attendedPairs));
        if (attendedPairs > 0)
        {
            const double forget = 0.98;
            double residual = seconds - Target.Predict(tokens);
            _pairSxx = forget * _pairSxx + attendedPairs * attendedPairs;
            _pairSxy = forget * _pairSxy + attendedPairs * (residual + SecondsPerAttendedPair * attendedPairs);
            SecondsPerAttendedPair = Math.Max(0, _pairSxy / _pairSxx);
        }
    }

    public void ObserveDraftForward(int tokens, double seconds)
    {
        if (!Frozen) Draft.Observe(tokens, seconds);
    }

    public void ObserveSuffix(int samples, double seconds)
    {
        if (Frozen || samples <= 0) return;
        double perSample = seconds / samples;
        SuffixSecondsPerSample = SuffixSecondsPerSample == 0 ? perSample : SuffixSecondsPerSample + 0.2 * (perSample - SuffixSecondsPerSample);
    }

    /// <summary>The batch-size bucket of measured goodput: the next power of two.</summary>
    public static int BatchBucket(int batch) => (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, batch));

    /// <summary>The class whose step times share a correction: off, the draft model, or the suffix proposer.</summary>
    private static string TimeClass(Strategy s) => s.IsOff ? "off" : s.Proposer switch
    {
        ProposerKind.DraftModel => nameof(ProposerKind.DraftModel),
        ProposerKind.Suffix => nameof(ProposerKind.Suffix),
        _ => s.Proposer.ToString(),
    };

    /// <summary>
    /// Records one step's wall time (everything: drafting, sampling drafts, verification, bookkeeping) against this
    /// model's prediction for it. The ratio, per class of strategy (off, draft model, suffix) and batch-size bucket,
    /// corrects later predictions of every strategy of that class: what the curves cannot see (the shape of the verify
    /// pass, the draft's sampling and bookkeeping) is learnt from one strategy and applied to its siblings. One step moves
    /// the ratio by at most a factor <see cref="MaxStepRatioChange"/> from its bucket's current correction, and every other
    /// class's and bucket's evidence ages (<see cref="StaleForgetting"/>), so an outlier or a stale measurement cannot
    /// keep a class from being tried again. Not kept in saved profiles; a frozen model records nothing.
    /// </summary>
    public void ObserveStepTime(Strategy strategy, int batch, double predictedSeconds, double actualSeconds)
    {
        if (Frozen || !(predictedSeconds > 0) || !(actualSeconds > 0) || !double.IsFinite(actualSeconds)) return;
        var key = (TimeClass(strategy), BatchBucket(batch));
        lock (_timeRatioLock)
        {
            // Relative to this bucket's own correction (1 before its first step), not one borrowed from another bucket.
            var (a, p, w) = _timeRatio.GetValueOrDefault(key);
            double current = p > 0 ? Shrunk(a, p, w) : 1;
            double actual = Math.Clamp(actualSeconds, predictedSeconds * current / MaxStepRatioChange, predictedSeconds * current * MaxStepRatioChange);
            foreach (var k in _timeRatio.Keys)
                if (k != key)
                {
                    ref var old = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_timeRatio, k);
                    old = (StaleForgetting * old.Actual, StaleForgetting * old.Predicted, StaleForgetting * old.Weight);
                }
            _timeRatio[key] = (RatioForgetting * a + actual, RatioForgetting * p + predictedSeconds, RatioForgetting * w + 1);
        }
    }

    /// <summary>
    /// Factor to multiply a predicted step time of <paramref name="strategy"/> at <paramref name="batch"/> samples by:
    /// measured / predicted time of recent steps of its class at that bucket (else at the nearest measured bucket),
    /// shrunk towards 1 by <see cref="RatioPrior"/> steps (1 when nothing of the class was measured).
    /// </summary>
    public double TimeCorrection(Strategy strategy, int batch)
    {
        lock (_timeRatioLock)
        {
            // This bucket's ratio; where it has none yet, the nearest measured bucket's (sizes next to each other
            // share most of their unmodelled costs), so a new batch size does not start from the raw curves.
            string cls = TimeClass(strategy);
            int bucket = BatchBucket(batch);
            if (!_timeRatio.TryGetValue((cls, bucket), out var m) || m.Predicted <= 0)
            {
                double nearest = double.PositiveInfinity;
                foreach (var ((c, b), v) in _timeRatio)
                {
                    double distance = Math.Abs(Math.Log2(b) - Math.Log2(bucket));
                    if (c == cls && v.Predicted > 0 && (distance < nearest || (distance == nearest && b < bucket))) { nearest = distance; m = v; }
                }
                if (double.IsPositiveInfinity(nearest)) return 1;
            }
            return Shrunk(m.Actual, m.Predicted, m.Weight);
        }
    }

    /// <summary>A bucket's measured ratio <paramref name="actual"/> / <paramref name="predicted"/>, shrunk towards 1 by <see cref="RatioPrior"/> steps.</summary>
    private static double Shrunk(double actual, double predicted, double weight) => (weight * (actual / predicted) + RatioPrior) / (weight + RatioPrior);

    private sealed record CurveJson(
        [property: JsonPropertyName("tokens")] double[] Tokens,
        [property: JsonPropertyName("seconds")] double[] Seconds,
        [property: JsonPropertyName("weights")] double[] Weights);

    private sealed record ProfileJson(
        [property: JsonPropertyName("version")] int Version,
        [property: JsonPropertyName("device")] string Device,
        [property: JsonPropertyName("target_forward")] CurveJson Target,
        [property: JsonPropertyName("target_seconds_per_attended_pair")] double PerPair,
        [property: JsonPropertyName("draft_forward")] CurveJson Draft,
        [property: JsonPropertyName("suffix_seconds_per_sample")] double Suffix,
        [property: JsonPropertyName("step_overhead")] CurveJson? Overhead);

    private static CurveJson ToJson(TimeCurve c) => new(c.Knots.ToArray(), c.Seconds.ToArray(), c.Weights.ToArray());

    /// <summary>Writes the profile as JSON (temporary file, then rename).</summary>
    public void Save(string path)
    {
        var json = JsonSerializer.Serialize(new ProfileJson(1, Device, ToJson(Target), SecondsPerAttendedPair, ToJson(Draft), SuffixSecondsPerSample, ToJson(Overhead)),
            new JsonSerializerOptions { WriteIndented = true });
        Model.Formats.AtomicFile.WriteText(path, json);
    }

    /// <summary>Loads a frozen profile; a missing or malformed file throws naming the file and the field.</summary>
    public static CostModel Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException(Directory.Exists(path) ? $"cost profile '{path}' is a folder, not a file" : $"cost profile '{path}' does not exist", path);
        ProfileJson? p;
        try { p = JsonSerializer.Deserialize<ProfileJson>(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"cost profile '{path}': not valid JSON ({e.Message})"); }
        if (p is null) throw new InvalidDataException($"cost profile '{path}': empty");
        if (p.Version != 1) throw new InvalidDataException($"cost profile '{path}': field 'version' is {p.Version}, expected 1");
        if (p.Target is null) throw new InvalidDataException($"cost profile '{path}': field 'target_forward' is missing");
        if (p.Draft is null) throw new InvalidDataException($"cost profile '{path}': field 'draft_forward' is missing");
        if (!double.IsFinite(p.PerPair) || p.PerPair < 0) throw new InvalidDataException($"cost profile '{path}': field 'target_seconds_per_attended_pair' = {p.PerPair} must be >= 0");
        if (!double.IsFinite(p.Suffix) || p.Suffix < 0) throw new InvalidDataException($"cost profile '{path}': field 'suffix_seconds_per_sample' = {p.Suffix} must be >= 0");
        TimeCurve Curve(CurveJson c, string field)
        {
            try { return new TimeCurve(c.Tokens ?? [], c.Seconds ?? [], c.Weights ?? []); }
            catch (ArgumentException e) { throw new InvalidDataException($"cost profile '{path}': field '{field}': {e.Message}"); }
        }
        // Profiles saved before the step overhead was measured have none: it then counts as 0.
        var overhead = p.Overhead is null ? new TimeCurve(p.Target.Tokens is { Length: > 0 } t ? (int)t[^1] : 1024) : Curve(p.Overhead, "step_overhead");
        return new CostModel(p.Device ?? "", Curve(p.Target, "target_forward"), Curve(p.Draft, "draft_forward"), overhead, p.PerPair, p.Suffix, frozen: true);
    }
}
