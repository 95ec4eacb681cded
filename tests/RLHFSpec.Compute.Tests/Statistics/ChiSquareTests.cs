namespace RLHFSpec.Compute.Tests.Statistics;

/// <summary>The χ² helper against known quantiles, so the losslessness tests that rely on it can be trusted.</summary>
public class ChiSquareTests
{
    [TestCase(1, 3.841459, 0.05)]
    [TestCase(10, 18.307038, 0.05)]
    [TestCase(10, 29.588298, 0.001)]
    [TestCase(100, 124.342113, 0.05)]
    [TestCase(215, 249.0, 0.0548)]
    public void UpperTailMatchesTables(int dof, double x, double p) =>
        Assert.That(ChiSquare.UpperTail(dof, x), Is.EqualTo(p).Within(p * 0.02));

    [Test]
    public void DetectsAWrongDistributionAndAcceptsTheRightOne()
    {
        var random = new Random(5);
        double[] probabilities = [0.1, 0.2, 0.3, 0.4];
        var counts = new long[4];
        for (int i = 0; i < 100_000; i++)
        {
            double u = random.NextDouble(), c = 0;
            int k = 0;
            while (k < 3 && u >= (c += probabilities[k])) k++;
            counts[k]++;
        }
        Assert.That(ChiSquare.Test(counts, probabilities).PValue, Is.GreaterThan(1e-3));
        Assert.That(ChiSquare.Test(counts, new[] { 0.11, 0.19, 0.3, 0.4 }).PValue, Is.LessThan(1e-6));
    }
}
