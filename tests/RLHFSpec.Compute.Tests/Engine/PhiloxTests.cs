using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Tests.Engine;

public class PhiloxTests
{
    // Known-answer vectors of Philox-4x32-10 from Random123 (first output word).
    [TestCase(0u, 0u, 0u, 0u, 0u, 0u, 0x6627e8d5u)]
    [TestCase(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du)]
    [TestCase(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u)]
    public void MatchesRandom123KnownAnswers(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, uint expected) =>
        Assert.That(Philox.Next(c0, c1, c2, c3, k0, k1), Is.EqualTo(expected));

    [Test]
    public void UniformsCoverTheOpenUnitIntervalEvenly()
    {
        const int n = 200_000;
        var bins = new long[20];
        double sum = 0, min = 1, max = 0;
        for (uint i = 0; i < n; i++)
        {
            float u = Philox.Uniform(0x5EED, 7, position: 3, sampleId: i / 16, stream: 0, index: i % 16);
            Assert.That(u, Is.GreaterThan(0f).And.LessThan(1f));
            sum += u; min = Math.Min(min, u); max = Math.Max(max, u);
            bins[(int)(u * 20)]++;
        }
        Assert.That(sum / n, Is.EqualTo(0.5).Within(0.005));
        Assert.That(min, Is.LessThan(1e-3));
        Assert.That(max, Is.GreaterThan(1 - 1e-3));
        var (_, _, p) = Statistics.ChiSquare.Test(bins, Enumerable.Repeat(1 / 20.0, 20).ToArray());
        Assert.That(p, Is.GreaterThan(1e-4));
        Assert.That(Philox.ToUniform(0), Is.EqualTo(1f / 16777216f));
        Assert.That(Philox.ToUniform(uint.MaxValue), Is.EqualTo(1f - 1f / 16777216f));
    }
}
