namespace RLHFSpec.Compute.Tests.Statistics;

/// <summary>Pearson's χ² goodness-of-fit test with the upper tail from the regularized incomplete gamma function.</summary>
public static class ChiSquare
{
    /// <summary>
    /// χ² statistic, degrees of freedom and p-value of <paramref name="observed"/> counts against
    /// <paramref name="probabilities"/> (summing to 1). Cells expected below <paramref name="minExpected"/> are
    /// pooled into one, so the χ² approximation holds.
    /// </summary>
    public static (double Statistic, int DegreesOfFreedom, double PValue) Test(IReadOnlyList<long> observed, IReadOnlyList<double> probabilities, double minExpected = 5)
    {
        if (observed.Count != probabilities.Count) throw new ArgumentException("observed and probabilities differ in length");
        long total = observed.Sum();
        double statistic = 0, pooledExpected = 0;
        long pooledObserved = 0;
        int cells = 0;
        for (int i = 0; i < observed.Count; i++)
        {
            double expected = total * probabilities[i];
            if (probabilities[i] <= 0)
            {
                // Anything drawn where the distribution has no mass is a plain failure.
                if (observed[i] > 0) return (double.PositiveInfinity, Math.Max(cells, 1), 0);
                continue;
            }
            if (expected < minExpected)
            {
                pooledExpected += expected;
                pooledObserved += observed[i];
                continue;
            }
            statistic += (observed[i] - expected) * (observed[i] - expected) / expected;
            cells++;
        }
        if (pooledExpected > 0)
        {
            if (pooledExpected < 1e-12 && pooledObserved > 0) return (double.PositiveInfinity, Math.Max(cells, 1), 0);
            statistic += (pooledObserved - pooledExpected) * (pooledObserved - pooledExpected) / Math.Max(pooledExpected, 1e-12);
            cells++;
        }
        int dof = Math.Max(cells - 1, 1);
        return (statistic, dof, UpperTail(dof, statistic));
    }

    /// <summary>P(X ≥ x) for X ~ χ²(k) = Q(k/2, x/2).</summary>
    public static double UpperTail(int k, double x) => x <= 0 ? 1 : RegularizedGammaQ(k / 2.0, x / 2.0);

    private static double RegularizedGammaQ(double a, double x)
    {
        if (double.IsPositiveInfinity(x)) return 0;
        if (x < a + 1)
        {
            // Series for P(a, x).
            double term = 1 / a, sum = term;
            for (int n = 1; n < 10_000; n++)
            {
                term *= x / (a + n);
                sum += term;
                if (Math.Abs(term) < Math.Abs(sum) * 1e-15) break;
            }
            return 1 - sum * Math.Exp(-x + a * Math.Log(x) - LogGamma(a));
        }
        // Lentz's continued fraction for Q(a, x).
        const double tiny = 1e-300;
        double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
        for (int i = 1; i < 10_000; i++)
        {
            double an = -i * (i - a);
            b += 2;
            d = an * d + b;
            if (Math.Abs(d) < tiny) d = tiny;
            c = b + an / c;
            if (Math.Abs(c) < tiny) c = tiny;
            d = 1 / d;
            double delta = d * c;
            h *= delta;
            if (Math.Abs(delta - 1) < 1e-15) break;
        }
        return Math.Exp(-x + a * Math.Log(x) - LogGamma(a)) * h;
    }

    /// <summary>ln Γ(x) for x &gt; 0 (Lanczos, g = 7).</summary>
    public static double LogGamma(double x)
    {
        ReadOnlySpan<double> g =
        [
            0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
        ];
        if (x < 0.5) return Math.Log(Math.PI / Math.Abs(Math.Sin(Math.PI * x))) - LogGamma(1 - x);
        x -= 1;
        double s = g[0];
        for (int i = 1; i < 9; i++) s += g[i] / (x + i);
        double t = x + 7.5;
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(s);
    }
}
