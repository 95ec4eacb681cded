namespace RLHFSpec.Compute.Benches;

/// <summary>Deterministic random inputs for benchmarks.</summary>
public static class BenchData
{
    /// <summary>Logits ~ N(0, 2²)-ish: spread like a trained LM head's, so warps keep realistic sets.</summary>
    public static float[] Logits(long count, int seed)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (long i = 0; i < count; i++)
            values[i] = (float)(2.0 * (random.NextDouble() + random.NextDouble() + random.NextDouble() - 1.5));
        return values;
    }

    public static float[] Uniform(long count, int seed)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (long i = 0; i < count; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }
}
