namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// Fits <see cref="StepTime"/> to an instance's measured steps (batch size, seconds) by least squares with
/// exponential forgetting, so it follows a machine whose speed changes. Until batch sizes vary enough to separate
/// the fixed from the per-sample part, the step time is taken as proportional to the batch (fixed part 0); fitted
/// parts are kept non-negative.
/// </summary>
public sealed class StepTimeFit(double forgetting = 0.98)
{
    private double _w, _x, _y, _xx, _xy;

    public double Forgetting { get; } = forgetting is > 0 and <= 1 ? forgetting : throw new ArgumentOutOfRangeException(nameof(forgetting), forgetting, "must be in (0, 1]");

    public void Observe(int batch, double seconds)
    {
        if (batch < 1 || !(seconds >= 0)) return;
        _w = Forgetting * _w + 1;
        _x = Forgetting * _x + batch;
        _y = Forgetting * _y + seconds;
        _xx = Forgetting * _xx + (double)batch * batch;
        _xy = Forgetting * _xy + batch * seconds;
    }

    /// <summary>The fitted step time with <paramref name="tokensPerSampleStep"/> (measured elsewhere); unknown before any step.</summary>
    public StepTime Current(double tokensPerSampleStep)
    {
        if (_w == 0) return default;
        double tokens = Math.Max(1, tokensPerSampleStep);
        double meanX = _x / _w, meanY = _y / _w;
        double variance = _xx / _w - meanX * meanX;
        if (variance < 0.25) return new StepTime(0, meanY / meanX, tokens);
        double b = (_xy / _w - meanX * meanY) / variance;
        double a = meanY - b * meanX;
        if (b < 0) return new StepTime(meanY, 0, tokens);
        if (a < 0) return new StepTime(0, _xy / _xx, tokens);
        return new StepTime(a, b, tokens);
    }
}
