using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// The reallocation benchmark: a long-tail workload on N instances, generated with static assignment and with
/// reallocation on fresh clusters, in alternating order (static, reallocated, reallocated, static, …) so that
/// warm-up and machine noise do not favour one side; the fastest run of each side is reported.
/// </summary>
public static class ClusterBenchmark
{
    /// <param name="instances">Instances per cluster.</param>
    /// <param name="factory">Creates instance k of a fresh cluster; called <paramref name="instances"/> times per run (the caller owns and disposes the models).</param>
    /// <param name="requests">The workload, e.g. <see cref="LongTail"/>.</param>
    /// <param name="options">Cluster options; <see cref="ClusterOptions.Reallocate"/> is set per side.</param>
    /// <param name="repeats">Runs per side (at least 1).</param>
    public static ReallocationComparison CompareReallocation(int instances, Func<int, GenerationInstance> factory, IReadOnlyList<GenerationRequest> requests,
        ClusterOptions? options = null, int repeats = 2)
    {
        ArgumentNullException.ThrowIfNull(factory);
        if (repeats < 1) throw new ArgumentOutOfRangeException(nameof(repeats), repeats, "must be >= 1");
        var baseOptions = options ?? new ClusterOptions();
        ClusterRunResult? bestStatic = null, bestReallocated = null;
        bool same = true;
        Dictionary<long, int[]>? reference = null;
        for (int r = 0; r < repeats; r++)
        {
            foreach (bool reallocate in r % 2 == 0 ? new[] { false, true } : [true, false])
            {
                ClusterRunResult result;
                using (var cluster = new GenerationCluster(instances, factory, baseOptions with { Reallocate = reallocate }))
                    result = cluster.Run(requests);
                reference ??= result.Results.ToDictionary(x => x.Request.SampleId, x => x.Tokens);
                same &= result.Results.All(x => x.Tokens.AsSpan().SequenceEqual(reference[x.Request.SampleId]));
                if (reallocate) { if (bestReallocated is null || result.Stats.WallSeconds < bestReallocated.Stats.WallSeconds) bestReallocated = result; }
                else if (bestStatic is null || result.Stats.WallSeconds < bestStatic.Stats.WallSeconds) bestStatic = result;
            }
        }
        return new ReallocationComparison(bestStatic!.Stats, bestReallocated!.Stats, same);
    }

    /// <summary>
    /// A long-tail workload: <paramref name="samples"/> samples of random prompts over [1, vocab) (one prompt each);
    /// every <paramref name="tailEvery"/>-th sample may generate <paramref name="longTokens"/> tokens, the others
    /// <paramref name="shortTokens"/> (lengths 10–50× apart as in the default task). Under round-robin over
    /// instance counts dividing <paramref name="tailEvery"/>, the whole tail lands on instance 0.
    /// </summary>
    public static GenerationRequest[] LongTail(int samples, int vocab, int shortTokens, int longTokens, int tailEvery, SamplingParams sampling, int seed = 1)
    {
        if (samples < 1 || vocab < 2 || shortTokens < 1 || longTokens < 1 || tailEvery < 1) throw new ArgumentOutOfRangeException(nameof(samples), "sizes must be positive (vocab >= 2)");
        var random = new Random(seed);
        return Enumerable.Range(0, samples).Select(i =>
        {
            var prompt = Enumerable.Range(0, random.Next(4, 12)).Select(_ => random.Next(1, vocab)).ToArray();
            return new GenerationRequest(i, i, 0, prompt, sampling, i % tailEvery == 0 ? longTokens : shortTokens);
        }).ToArray();
    }
}
