namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// How steps pick their strategy: adaptively (<see cref="StrategySelector"/>), or one fixed <see cref="Strategy"/>
/// (<c>off</c> included). Parsed once where text comes in (the CLI's <c>--strategy</c>, the RLHF config's
/// <c>speculation</c>); the library only sees this value.
/// </summary>
public readonly record struct StrategyMode
{
    private StrategyMode(bool adaptive, Strategy strategy)
    {
        IsAdaptive = adaptive;
        Fixed = strategy;
    }

    public static StrategyMode Adaptive { get; } = new(true, Strategy.Off);

    public static StrategyMode Of(Strategy strategy) => new(false, strategy);

    /// <summary>No speculation: every step is <see cref="Strategy.Off"/>.</summary>
    public static StrategyMode Off { get; } = new(false, Strategy.Off);

    public bool IsAdaptive { get; }

    /// <summary>True for the fixed strategy <c>off</c>: no step drafts, so no draft model is needed.</summary>
    public bool IsOff => !IsAdaptive && Fixed.IsOff;

    /// <summary>The strategy of every step when not adaptive (<see cref="Strategy.Off"/> when adaptive).</summary>
    public Strategy Fixed { get; }

    /// <summary><c>adaptive</c>, or a strategy as <see cref="Strategy.Parse"/> reads it; errors name <paramref name="argument"/>.</summary>
    public static StrategyMode Parse(string text, string argument = "strategy")
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Trim().Equals("adaptive", StringComparison.OrdinalIgnoreCase)) return Adaptive;
        return Of(Strategy.Parse(text, argument, acceptsAdaptive: true));
    }

    public override string ToString() => IsAdaptive ? "adaptive" : Fixed.ToString();
}
