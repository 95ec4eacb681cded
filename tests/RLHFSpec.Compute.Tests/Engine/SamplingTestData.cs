using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>Random logits, sampling settings and draft trees for the sample and verify tests.</summary>
internal static class SamplingTestData
{
    public static readonly float[] Temperatures = [0f, 0.3f, 1f, 1.7f];

    /// <summary>[rows, vocab] logits ~ N(0, scale²), with a few −Inf (masked) tokens in some rows.</summary>
    public static float[] Logits(System.Random rng, int rows, int vocab, float scale = 3f, bool masked = true)
    {
        var logits = new float[(long)rows * vocab];
        for (long i = 0; i < logits.Length; i++) logits[i] = scale * Normal(rng);
        if (masked)
            for (int r = 0; r < rows; r++)
                if (rng.Next(3) == 0)
                    for (int m = 0; m < Math.Min(5, vocab - 1); m++) logits[(long)r * vocab + rng.Next(vocab)] = float.NegativeInfinity;
        return logits;
    }

    public static float Normal(System.Random rng) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));

    /// <summary>Random settings: temperature from <see cref="Temperatures"/>, top-k and top-p on or off.</summary>
    public static SamplingParams Params(System.Random rng, int vocab, uint sampleId, int position, uint stream = 0)
    {
        float t = Temperatures[rng.Next(Temperatures.Length)];
        int[] ks = [0, 1, 5, 50, vocab, vocab + 3];
        float[] ps = [1f, 1f, 0.95f, 0.7f, 0.3f];
        return SamplingParams.Random(t, (ulong)rng.NextInt64(), sampleId, position, ks[rng.Next(ks.Length)], ps[rng.Next(ps.Length)], stream);
    }

    /// <summary>Parents of a random tree of <paramref name="nodes"/> nodes of the given shape.</summary>
    public static int[] Tree(System.Random rng, string shape, int nodes) => shape switch
    {
        "chain" => Enumerable.Range(0, nodes).Select(i => i - 1).ToArray(),
        "wide" => Enumerable.Repeat(-1, nodes).ToArray(),
        "deep" => Enumerable.Range(0, nodes).Select(i => i < 2 ? -1 : i - 2).ToArray(),
        _ => Enumerable.Range(0, nodes).Select(i => rng.Next(-1, i)).ToArray(),
    };
}
