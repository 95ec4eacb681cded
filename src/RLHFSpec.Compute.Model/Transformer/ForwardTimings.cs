namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>Where a <see cref="TransformerModel"/>'s forward time went (cumulative, seconds).</summary>
public sealed class ForwardTimings
{
    public long Forwards { get; set; }
    public long Tokens { get; set; }
    public double PlanSeconds { get; set; }
    public double DensePreSeconds { get; set; }
    public double AttentionSeconds { get; set; }
    public double DensePostSeconds { get; set; }
    public double HeadSeconds { get; set; }

    public double TotalSeconds => PlanSeconds + DensePreSeconds + AttentionSeconds + DensePostSeconds + HeadSeconds;

    public override string ToString() =>
        $"{Forwards} forwards, {Tokens} tokens: plan {PlanSeconds:F3} s, dense-pre {DensePreSeconds:F3} s, attention {AttentionSeconds:F3} s, dense-post {DensePostSeconds:F3} s, head {HeadSeconds:F3} s";
}
