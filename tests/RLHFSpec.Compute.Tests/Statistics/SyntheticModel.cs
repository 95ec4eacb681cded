namespace RLHFSpec.Compute.Tests.Statistics;

/// <summary>
/// A toy language model over a small vocabulary: logits are a deterministic hash of (prefix, token), so any
/// sequence's exact probability can be enumerated. A draft model is the target plus hashed noise, so the two
/// agree often but not always, as a real draft does. With a <c>window</c>, logits depend only on the last
/// <c>window</c> tokens (an n-gram model), so greedy outputs fall into cycles that a suffix tree can predict.
/// </summary>
public sealed class SyntheticModel(int vocab, ulong salt, SyntheticModel? basis = null, float noise = 0f, float spread = 2.5f, int window = 0)
{
    public int Vocab => vocab;

    public void Logits(ReadOnlySpan<int> prefix, Span<float> logits)
    {
        ulong h = salt;
        if (window > 0 && prefix.Length > window) prefix = prefix[^window..];
        foreach (int t in prefix) h = Mix(h ^ (ulong)(uint)t * 0x9E3779B97F4A7C15UL);
        if (basis is not null) basis.Logits(prefix, logits);
        for (int v = 0; v < vocab; v++)
        {
            float r = (float)(Mix(h + (ulong)v) >> 11) * (1f / (1UL << 53)) * 2f - 1f; // [-1, 1)
            logits[v] = basis is null ? spread * r : logits[v] + noise * r;
        }
    }

    public float[] Logits(ReadOnlySpan<int> prefix)
    {
        var l = new float[vocab];
        Logits(prefix, l);
        return l;
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
