namespace RLHFSpec.Compute.Drafting;

/// <summary>A prompt's tokens as a dictionary key (by content): what the suffix index and the length predictor key on.</summary>
public sealed class PromptKey(int[] prompt) : IEquatable<PromptKey>
{
    private readonly int[] _prompt = prompt;
    private readonly int _hash = ComputeHash(prompt);

    private static int ComputeHash(int[] p)
    {
        var h = new HashCode();
        foreach (int t in p) h.Add(t);
        return h.ToHashCode();
    }

    public bool Equals(PromptKey? other) => other is not null && _prompt.AsSpan().SequenceEqual(other._prompt);
    public override bool Equals(object? obj) => Equals(obj as PromptKey);
    public override int GetHashCode() => _hash;
}
