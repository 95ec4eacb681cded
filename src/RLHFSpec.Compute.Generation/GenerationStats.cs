using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

/// <summary>What an instance did: steps, tokens, acceptance, strategy choices and where the time went.</summary>
public sealed class GenerationStats
{
    public long Steps { get; set; }

    /// <summary>Samples in the last decoding step.</summary>
    public int LastBatch { get; private set; }
    public long TokensGenerated { get; set; }
    public long DraftTokensProposed { get; set; }
    public long DraftTokensAccepted { get; set; }
    public long Preemptions { get; set; }
    public long PrefillTokens { get; set; }

    /// <summary>Prompt tokens not fed but copied from a sibling admitted with the same prompt (see <see cref="InstanceOptions.SharePromptPrefill"/>).</summary>
    public long SharedPrefillTokens { get; set; }
    public double PrefillSeconds { get; set; }
    public double DraftSeconds { get; set; }
    public double VerifyForwardSeconds { get; set; }
    public double VerifyKernelSeconds { get; set; }

    /// <summary>Steps per chosen strategy, in order of first choice.</summary>
    public Dictionary<Strategy, long> StrategyHistogram { get; } = new();

    /// <summary>
    /// Decode-step seconds per chosen strategy: a few steps of a deep draft at a large batch can cost more than hundreds
    /// of <c>off</c> steps, which the step counts alone hide.
    /// </summary>
    public Dictionary<Strategy, double> SecondsByStrategy { get; } = new();

    /// <summary>Per live batch size: (steps, tokens emitted by sample-steps, sample-steps).</summary>
    public SortedDictionary<int, (long Steps, long Emitted, long SampleSteps)> ByBatchSize { get; } = new();

    /// <summary>Mean tokens a sample emits per step (1 = no speculation gain).</summary>
    public double MeanEmittedPerSampleStep
    {
        get
        {
            long emitted = ByBatchSize.Values.Sum(v => v.Emitted), sampleSteps = ByBatchSize.Values.Sum(v => v.SampleSteps);
            return sampleSteps == 0 ? 0 : (double)emitted / sampleSteps;
        }
    }

    /// <summary>Sample-steps of decoding (a step of B samples counts B).</summary>
    public long SampleSteps => ByBatchSize.Values.Sum(v => v.SampleSteps);

    /// <summary>Mean draft tokens a sample has accepted per step (0 before any step).</summary>
    public double MeanAcceptedPerSampleStep
    {
        get
        {
            long sampleSteps = SampleSteps;
            return sampleSteps == 0 ? 0 : (double)DraftTokensAccepted / sampleSteps;
        }
    }

    /// <summary>Accepted over proposed draft tokens (0 when none were proposed).</summary>
    public double AcceptanceRate => DraftTokensProposed == 0 ? 0 : (double)DraftTokensAccepted / DraftTokensProposed;

    /// <summary>Adds <paramref name="other"/>'s counts and times into this one (the totals of several instances).</summary>
    public void Add(GenerationStats other)
    {
        ArgumentNullException.ThrowIfNull(other);
        Steps += other.Steps;
        TokensGenerated += other.TokensGenerated;
        DraftTokensProposed += other.DraftTokensProposed;
        DraftTokensAccepted += other.DraftTokensAccepted;
        Preemptions += other.Preemptions;
        PrefillTokens += other.PrefillTokens;
        SharedPrefillTokens += other.SharedPrefillTokens;
        PrefillSeconds += other.PrefillSeconds;
        DraftSeconds += other.DraftSeconds;
        VerifyForwardSeconds += other.VerifyForwardSeconds;
        VerifyKernelSeconds += other.VerifyKernelSeconds;
        foreach (var (key, steps) in other.StrategyHistogram) StrategyHistogram[key] = StrategyHistogram.GetValueOrDefault(key) + steps;
        foreach (var (key, seconds) in other.SecondsByStrategy) SecondsByStrategy[key] = SecondsByStrategy.GetValueOrDefault(key) + seconds;
        foreach (var (batch, (s, e, ss)) in other.ByBatchSize)
        {
            var (s0, e0, ss0) = ByBatchSize.GetValueOrDefault(batch);
            ByBatchSize[batch] = (s0 + s, e0 + e, ss0 + ss);
        }
        foreach (var (batch, seconds) in other.SecondsByBatchSize) SecondsByBatchSize[batch] = SecondsByBatchSize.GetValueOrDefault(batch) + seconds;
    }

    /// <summary>Per live batch size: seconds of the decode steps taken at that size (draft, verify forward, kernel, commit).</summary>
    public SortedDictionary<int, double> SecondsByBatchSize { get; } = new();

    /// <summary>Tokens emitted by decode steps (every generated token but each sample's first, which prefill emits).</summary>
    public long DecodeTokens => ByBatchSize.Values.Sum(v => v.Emitted);

    /// <summary>Seconds spent in decode steps (summed over instances when several ran).</summary>
    public double DecodeSeconds => SecondsByBatchSize.Values.Sum();

    /// <summary>
    /// Seconds of decode steps outside the draft (proposers, draft forwards included), the verify forward and the verify
    /// kernel: planning (strategy selection), reservation, commit, emitting, retiring, the step loop's bookkeeping.
    /// </summary>
    public double OutsideForwardsSeconds => Math.Max(0, DecodeSeconds - DraftSeconds - VerifyForwardSeconds - VerifyKernelSeconds);

    /// <summary>Prompt (and recomputed) tokens per second of prefill forwards; 0 when none ran.</summary>
    public double PrefillTokensPerSecond => PrefillSeconds > 0 ? PrefillTokens / PrefillSeconds : 0;

    /// <summary>Tokens per second of decode steps; 0 when none ran.</summary>
    public double DecodeTokensPerSecond => DecodeSeconds > 0 ? DecodeTokens / DecodeSeconds : 0;

    internal void RecordStep(Strategy strategy, int batch, long emitted, double seconds)
    {
        SecondsByBatchSize[batch] = SecondsByBatchSize.GetValueOrDefault(batch) + seconds;
        Steps++;
        LastBatch = batch;
        StrategyHistogram[strategy] = StrategyHistogram.GetValueOrDefault(strategy) + 1;
        SecondsByStrategy[strategy] = SecondsByStrategy.GetValueOrDefault(strategy) + seconds;
        var (s, e, ss) = ByBatchSize.GetValueOrDefault(batch);
        ByBatchSize[batch] = (s + 1, e + emitted, ss + batch);
    }
}
