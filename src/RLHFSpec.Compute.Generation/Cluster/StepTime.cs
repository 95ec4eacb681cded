namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// An instance's measured step time as an affine function of its live batch, t(B) = <see cref="FixedSeconds"/> +
/// <see cref="SecondsPerSample"/> × B, and the tokens a sample emits per step (&gt; 1 with speculation). Decoding
/// samples with r₁ ≥ r₂ ≥ … remaining steps takes Σₖ t(samples still running at step k) = a·r₁ + b·Σ rᵢ: the
/// fixed part is paid once per step of the longest sample, the per-sample part once per sample-step. So moving
/// samples pays off through the per-sample part, and through the fixed part only when it shortens the longest.
/// </summary>
public readonly record struct StepTime(double FixedSeconds, double SecondsPerSample, double TokensPerSampleStep)
{
    /// <summary>Whether anything was measured (an unknown step time predicts no gain).</summary>
    public bool IsKnown => FixedSeconds + SecondsPerSample > 0 && TokensPerSampleStep > 0;

    /// <summary>Predicted seconds to generate <paramref name="remainingTokens"/> (one entry per sample) on this instance.</summary>
    public double Seconds(IEnumerable<double> remainingTokens)
    {
        double longest = 0, total = 0;
        foreach (double r in remainingTokens)
        {
            longest = Math.Max(longest, r);
            total += r;
        }
        return (FixedSeconds * longest + SecondsPerSample * total) / TokensPerSampleStep;
    }
}
