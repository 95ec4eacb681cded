using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;
using RLHFSpec.Compute.Tests.Statistics;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The sample kernel's tokens follow the warped distribution: Pearson χ² over many independent draws (one row per
/// draw, each its own sample id) against <see cref="ReferenceSampler.Distribution"/>. Seeds are fixed, so the test is
/// deterministic; it passes when p &gt; 1e-4, and the same counts must reject the distribution at 1.15 T (p &lt; 1e-6), which
/// shows the test has the power to fail.
/// </summary>
public class SampleStatisticalTests
{
    private static readonly float[] Logits = [1.3f, 0.2f, -0.4f, 2.1f, 0.9f, -1.7f, 0.5f, 1.8f, -0.1f, 0.05f, -2.5f, 1.1f];

    [TestCase("cpu", 1f, 0, 1f, 200_000)]
    [TestCase("cpu", 1f, 6, 0.8f, 200_000)]
    [TestCase("cpu", 0.5f, 0, 0.9f, 200_000)]
    [TestCase("cpu", 0.5f, 4, 1f, 200_000)]
    [TestCase("vulkan", 1f, 6, 0.8f, 50_000)]
    [TestCase("vulkan", 0.5f, 0, 0.9f, 50_000)]
    public void TokensFollowTheWarpedDistribution(string backendName, float temperature, int topK, float topP, int draws)
    {
        int vocab = Logits.Length;
        var logits = new float[(long)draws * vocab];
        for (int d = 0; d < draws; d++) Logits.CopyTo(logits, (long)d * vocab);
        var rows = Enumerable.Range(0, draws).Select(d => SamplingParams.Random(temperature, 0xC0FFEE, (uint)d, 3, topK, topP)).ToArray();
        var (tokens, _) = SampleTests.Run(Backends.Get(backendName), rows, logits, vocab);

        var counts = new long[vocab];
        foreach (int t in tokens) counts[t]++;
        var expected = ReferenceSampler.Distribution(Logits, rows[0]);
        var (chi2, dof, p) = ChiSquare.Test(counts, expected);
        TestContext.Out.WriteLine($"χ² = {chi2:F2}, dof = {dof}, p = {p:G3}; counts {string.Join(' ', counts)}");
        Assert.That(p, Is.GreaterThan(1e-4), $"χ² = {chi2:F2} with {dof} degrees of freedom");

        var hotter = rows[0];
        hotter.Temperature *= 1.15f;
        Assert.That(ChiSquare.Test(counts, ReferenceSampler.Distribution(Logits, hotter)).PValue, Is.LessThan(1e-6),
            "the test cannot tell T from 1.15 T");
    }
}
