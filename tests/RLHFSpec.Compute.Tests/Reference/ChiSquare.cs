namespace RLHFSpec.Compute.Tests.Reference;

/// <summary>Pearson's χ² goodness-of-fit test with its p-value (regularised upper incomplete gamma).</summary>
public static class ChiSquare
{
    /// <summary>
    /// χ² of <paramref name="observed"/> counts against <paramref name="expected"/> probabilities. Categories whose
    /// expected count is below <paramref name="minExpected"/> are pooled into one; a count in a category of zero
    /// probability makes the p-value 0. Returns (statistic, degrees of freedom, p-value).
    /// </summary>
    public static (double Statistic, int DegreesOfFreedom, double PValue) Test(IReadOnlyList<long> observed, IReadOnlyList<double> expected, double minExpected = 5)
    {
        if (observed.Count != expected.Count) throw new ArgumentException("observed and expected differ in length");
        long n = observed.Sum();
        double statistic = 0, pooledExpected = 0;
        long pooledObserved = 0;
        int categories = 0;
        for (int i = 0; i < observed.Count; i++)
        {
            double e = expected[i] * n;
            if (expected[i] <= 0)
            {
                if (observed[i] > 0) return (double.PositiveInfinity, 0, 0);
                continue;
            }
            if (e < minExpected) { pooledExpected += e; pooledObserved += observed[i]; continue; }
            statistic += (observed[i] - e) * (observed[i] - e) / e;
            categories++;
        }
        if (pooledExpected > 0)
        {
            statistic += (pooledObserved - pooledExpected) * (pooledObserved - pooledExpected) / pooledExpected;
            categories++;
        }
        int dof = Math.Max(1, categories - 1);
        return (statistic, dof, UpperRegularizedGamma(dof / 2.0, statistic / 2.0));
    }

    /// <summary>Q(a, x) = Γ(a, x) / Γ(a) (Numerical Recipes' series / continued fraction split).</summary>
    public static double UpperRegularizedGamma(double a, double x)
    {
        if (x <= 0) return 1;
        double logPrefix = a * Math.Log(x) - x - LogGamma(a);
        if (x < a + 1)
        {
            double sum = 1 / a, term = sum;
            for (int k = 1; k < 10000; k++)
            {
                term *= x / (a + k);
                sum += term;
                if (Math.Abs(term) < Math.Abs(sum) * 1e-15) break;
            }
            return 1 - sum * Math.Exp(logPrefix);
        }
        // Lentz's continued fraction for Γ(a, x).
        double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
        for (int i = 1; i < 10000; i++)
        {
            double an = -i * (i - a);
            b += 2;
            d = an * d + b; if (Math.Abs(d) < 1e-300) d = 1e-300;
            c = b + an / c; if (Math.Abs(c) < 1e-300) c = 1e-300;
            d = 1 / d;
            double delta = d * c;
            h *= delta;
            if (Math.Abs(delta - 1) < 1e-15) break;
        }
        return Math.Exp(logPrefix) * h;
    }

    /// <summary>ln Γ(x), Lanczos approximation (g = 7, 9 terms).</summary>
    public static double LogGamma(double x)
    {
        double[] g = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
        if (x < 0.5) return Math.Log(Math.PI / Math.Sin(Math.PI * x)) - LogGamma(1 - x);
        x -= 1;
        double a = g[0], t = x + 7.5;
        for (int i = 1; i < 9; i++) a += g[i] / (x + i);
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(a);
    }
}
