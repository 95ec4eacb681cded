namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// The options of <c>rlhfspec bench generation</c> as parsed, each property named after its option, not yet checked:
/// <see cref="GenerationBench"/> checks them all before any work, so a bad value is still a one-line error.
/// </summary>
internal sealed record GenerationBenchOptions
{
    public required string? Model { get; init; }
    public required string? Draft { get; init; }

    /// <summary><c>--set</c>, also spelled <c>--model-set</c>.</summary>
    public required string? Set { get; init; }

    public required int NumPrompts { get; init; }
    public required int SamplesPerPrompt { get; init; }
    public required int MaxNewTokens { get; init; }
    public required float Temperature { get; init; }

    /// <summary><c>--strategies</c> as written; the bench adds <c>off</c> first whatever they name.</summary>
    public required string[] Strategies { get; init; }

    public required string Device { get; init; }
    public required string Ep { get; init; }
    public required int Threads { get; init; }

    /// <summary><c>--dense</c> as written (parsed with the other checks).</summary>
    public required string Dense { get; init; }

    public required ulong Seed { get; init; }
    public required string? Markdown { get; init; }
    public required string? Plot { get; init; }

    /// <summary><c>--batch-sizes</c> without its zeros (0 = no sweep): empty means no sweep.</summary>
    public required int[] BatchSizes { get; init; }

    public required int SweepTokens { get; init; }
    public required string? SweepPlot { get; init; }
    public required int Repeats { get; init; }
    public required string? Trace { get; init; }
}
