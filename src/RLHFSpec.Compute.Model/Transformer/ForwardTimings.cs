namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>Where a <see cref="TransformerModel"/>'s forward time went (cumulative, seconds).</summary>
public sealed class ForwardTimings
{
    public long Forwards { get; set; }
    public long Tokens { get; set; }
    public double PlanSeconds { get; set; }
    public double DensePreSeconds { get; set; }
    /// <summary>Moving the step's q/k/v to the attention backend and appending k/v to the paged cache.</summary>
    public double KvWriteSeconds { get; set; }
    /// <summary>The attention kernel over the paged cache and reading its output back.</summary>
    public double AttentionSeconds { get; set; }
    public double DensePostSeconds { get; set; }
    public double HeadSeconds { get; set; }

    public double TotalSeconds => PlanSeconds + DensePreSeconds + KvWriteSeconds + AttentionSeconds + DensePostSeconds + HeadSeconds;

    /// <summary>Zeroes every counter (a benchmark does after its warm-up runs).</summary>
    public void Reset()
    {
        Forwards = Tokens = 0;
        PlanSeconds = DensePreSeconds = KvWriteSeconds = AttentionSeconds = DensePostSeconds = HeadSeconds = 0;
    }

    public override string ToString() =>
        $"{Forwards} forwards, {Tokens} tokens: plan {PlanSeconds:F3} s, dense-pre {DensePreSeconds:F3} s, kv-write {KvWriteSeconds:F3} s, attention {AttentionSeconds:F3} s, dense-post {DensePostSeconds:F3} s, head {HeadSeconds:F3} s";
}
