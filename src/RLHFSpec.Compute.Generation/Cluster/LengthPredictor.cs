using RLHFSpec.Compute.Drafting;
namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// Predicts a sample's response length: from the responses to the same prompt in earlier iterations (an
/// exponential moving average, so a policy that changes is followed), else from the prompt's length
/// (<see cref="TokensPerPromptToken"/> × prompt tokens, a heuristic for prompts never seen), capped by the
/// sample's token limit. A sample that has outgrown its prediction is expected to go on for half of what its
/// limit still allows.
/// </summary>
public sealed class LengthPredictor(double tokensPerPromptToken = 4, double smoothing = 0.5)
{
    private readonly Dictionary<PromptKey, double> _lengths = new();

    /// <summary>Response tokens predicted per prompt token for a prompt never seen.</summary>
    public double TokensPerPromptToken { get; } = tokensPerPromptToken > 0 ? tokensPerPromptToken : throw new ArgumentOutOfRangeException(nameof(tokensPerPromptToken), tokensPerPromptToken, "must be > 0");

    /// <summary>Weight of the newest observation in the moving average (1 = only the last iteration counts).</summary>
    public double Smoothing { get; } = smoothing is > 0 and <= 1 ? smoothing : throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, "must be in (0, 1]");

    /// <summary>Prompts with an observed response length.</summary>
    public int KnownPrompts => _lengths.Count;

    /// <summary>Records a finished response of <paramref name="responseTokens"/> tokens to <paramref name="prompt"/>.</summary>
    public void Observe(int[] prompt, int responseTokens)
    {
        var key = new PromptKey(prompt);
        _lengths[key] = _lengths.TryGetValue(key, out double old) ? old + Smoothing * (responseTokens - old) : responseTokens;
    }

    /// <summary>Whether <paramref name="prompt"/> has been seen (its prediction is learned, not a heuristic).</summary>
    public bool Knows(int[] prompt) => _lengths.ContainsKey(new PromptKey(prompt));

    /// <summary>Predicted response tokens of <paramref name="request"/> in total (at least 1, at most its limit).</summary>
    public double PredictTotal(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        double predicted = _lengths.TryGetValue(new PromptKey(request.Prompt), out double known) ? known : TokensPerPromptToken * request.Prompt.Length;
        return Math.Clamp(predicted, 1, request.MaxNewTokens);
    }

    /// <summary>Predicted tokens still to generate for a sample that has generated <paramref name="generated"/> so far.</summary>
    public double PredictRemaining(GenerationRequest request, int generated)
    {
        double total = PredictTotal(request);
        if (generated < total) return total - generated;
        return Math.Max(1, (request.MaxNewTokens - generated) / 2.0);
    }
}
