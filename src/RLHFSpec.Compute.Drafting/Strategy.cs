using System.Globalization;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// What one step drafts for a sample, as a value. Strings (the CLI's <c>--strategy</c>): <c>off</c>;
/// <c>chain:K</c> (draft model, K tokens); <c>tree:DEPTH,TOPK,BUDGET</c> (draft model, dynamic tree of at most
/// BUDGET nodes); <c>suffix:K</c> (suffix-tree chain of K tokens); <c>suffix-tree:DEPTH,TOPK,BUDGET</c>.
/// </summary>
public readonly record struct Strategy(ProposerKind Proposer, DraftShape Shape, int Depth, int TopK, int Budget)
{
    public const int MaxDraftTokens = 64;

    public static Strategy Off => new(ProposerKind.None, DraftShape.Off, 0, 0, 0);

    public static Strategy Chain(ProposerKind proposer, int k) => new(proposer, DraftShape.Chain, k, 1, k);

    public static Strategy Tree(ProposerKind proposer, int depth, int topK, int budget) => new(proposer, DraftShape.Tree, depth, topK, budget);

    public bool IsOff => Shape == DraftShape.Off;

    /// <summary>Most draft nodes the strategy proposes for one sample (verification rows: this + 1).</summary>
    public int MaxNodes => Shape == DraftShape.Off ? 0 : Budget;

    public override string ToString() => (Proposer, Shape) switch
    {
        (_, DraftShape.Off) => "off",
        (ProposerKind.DraftModel, DraftShape.Chain) => $"chain:{Depth}",
        (ProposerKind.DraftModel, DraftShape.Tree) => $"tree:{Depth},{TopK},{Budget}",
        (ProposerKind.Suffix, DraftShape.Chain) => $"suffix:{Depth}",
        (ProposerKind.Suffix, DraftShape.Tree) => $"suffix-tree:{Depth},{TopK},{Budget}",
        _ => $"{Proposer}/{Shape}:{Depth},{TopK},{Budget}",
    };

    /// <summary>Parses a strategy string; an unknown or out-of-range one throws naming <paramref name="argument"/>.</summary>
    public static Strategy Parse(string text, string argument = "strategy") => Parse(text, argument, acceptsAdaptive: false);

    /// <summary>As <see cref="Parse(string, string)"/>; <paramref name="acceptsAdaptive"/>: the caller also accepts <c>adaptive</c>, so an error lists it.</summary>
    internal static Strategy Parse(string text, string argument, bool acceptsAdaptive)
    {
        string s = text.Trim().ToLowerInvariant();
        if (s == "off") return Off;
        int colon = s.IndexOf(':');
        string name = colon < 0 ? s : s[..colon];
        var numbers = colon < 0 ? Array.Empty<string>() : s[(colon + 1)..].Split(',');
        int[] values;
        try { values = numbers.Select(n => int.Parse(n, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray(); }
        catch (FormatException) { throw Bad(text, argument, acceptsAdaptive); }
        catch (OverflowException) { throw Bad(text, argument, acceptsAdaptive); }
        Strategy result = (name, values.Length) switch
        {
            ("chain", 1) => Chain(ProposerKind.DraftModel, values[0]),
            ("suffix", 1) => Chain(ProposerKind.Suffix, values[0]),
            ("tree", 3) => Tree(ProposerKind.DraftModel, values[0], values[1], values[2]),
            ("suffix-tree", 3) => Tree(ProposerKind.Suffix, values[0], values[1], values[2]),
            _ => throw Bad(text, argument, acceptsAdaptive),
        };
        if (result.Depth < 1 || result.TopK < 1 || result.Budget < result.Depth || result.Budget > MaxDraftTokens)
            throw new ArgumentException($"{argument} '{text}': need 1 <= depth <= budget <= {MaxDraftTokens} and top-k >= 1", argument);
        return result;
    }

    private static ArgumentException Bad(string text, string argument, bool acceptsAdaptive) =>
        new($"{argument} '{text}': expected {(acceptsAdaptive ? "adaptive, " : "")}off, chain:K, tree:DEPTH,TOPK,BUDGET, suffix:K or suffix-tree:DEPTH,TOPK,BUDGET", argument);
}
