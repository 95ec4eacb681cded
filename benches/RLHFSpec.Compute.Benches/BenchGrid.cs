namespace RLHFSpec.Compute.Benches;

/// <summary>
/// Which sizes the benchmarks sweep. The quick grid (default) finishes in minutes on lavapipe; the full grid
/// sweeps batch 1–256, draft tokens 1–64, vocab 32k–152k and context 128–8k. Chosen by Program through the
/// environment so that out-of-process benchmark runs see it too.
/// </summary>
public static class BenchGrid
{
    public const string GridVariable = "RLHFSPEC_BENCH_GRID";
    public const string BackendsVariable = "RLHFSPEC_BENCH_BACKENDS";

    public static bool Full => string.Equals(Environment.GetEnvironmentVariable(GridVariable), "full", StringComparison.OrdinalIgnoreCase);

    /// <summary>Quick values, or quick and full values together on the full grid.</summary>
    public static IEnumerable<T> Pick<T>(T[] quick, T[] full) => Full ? full : quick;

    /// <summary>Logit/KV buffers above this are skipped (they would not fit a small GPU or take minutes on lavapipe).</summary>
    public static long MaxBufferBytes => Full ? 4L << 30 : 1L << 30;
}
