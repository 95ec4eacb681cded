using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>AdamW against a scalar double-precision reference; clipping; schedule; convergence; state files.</summary>
public class AdamWTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "adamw-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>Textbook AdamW (PyTorch semantics), one element at a time, in double.</summary>
    private sealed class Reference
    {
        public double[] W, M, V;
        public Reference(float[] w) { W = w.Select(x => (double)x).ToArray(); M = new double[w.Length]; V = new double[w.Length]; }
    }

    private static void ReferenceStep(IList<(Reference P, float[] G, bool Decay)> ps, AdamWOptions o, long t)
    {
        double norm = Math.Sqrt(ps.Sum(p => p.G.Sum(g => (double)g * g)));
        double clip = o.MaxGradNorm > 0 ? Math.Min(1, o.MaxGradNorm / (norm + 1e-6)) : 1;
        double lr = o.Schedule.At(t);
        foreach (var (p, grad, decay) in ps)
            for (int i = 0; i < p.W.Length; i++)
            {
                double g = grad[i] * clip;
                if (decay) p.W[i] -= lr * o.WeightDecay * p.W[i];
                p.M[i] = o.Beta1 * p.M[i] + (1 - o.Beta1) * g;
                p.V[i] = o.Beta2 * p.V[i] + (1 - o.Beta2) * g * g;
                double mHat = p.M[i] / (1 - Math.Pow(o.Beta1, t)), vHat = p.V[i] / (1 - Math.Pow(o.Beta2, t));
                p.W[i] -= lr * mHat / (Math.Sqrt(vHat) + o.Epsilon);
            }
    }

    [Test]
    public void MatchesScalarReferenceOverSeveralSteps([Values(0.5, 0.0)] double maxNorm, [Values(1, 37, 1000)] int n)
    {
        var rng = new Random(n);
        var o = new AdamWOptions
        {
            Schedule = new LearningRateSchedule(0.01, warmupSteps: 2, totalSteps: 6, minLr: 0.001),
            WeightDecay = 0.1, MaxGradNorm = maxNorm,
        };
        var w1 = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var w2 = Enumerable.Range(0, 13).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var g1 = new float[n];
        var g2 = new float[13];
        var opt = new AdamW(o);
        opt.Add("w", w1, g1);
        opt.Add("norm", w2, g2, decay: false);
        var refs = new List<(Reference, float[], bool)> { (new Reference(w1), g1, true), (new Reference(w2), g2, false) };
        for (int t = 1; t <= 8; t++)
        {
            for (int i = 0; i < n; i++) g1[i] = (float)(rng.NextDouble() * 2 - 1);
            for (int i = 0; i < 13; i++) g2[i] = (float)(rng.NextDouble() * 2 - 1) * (t % 3);
            ReferenceStep(refs, o, t);
            double norm = opt.Update();
            Assert.That(norm, Is.EqualTo(Math.Sqrt(g1.Concat(g2).Sum(g => (double)g * g))).Within(1e-10).Percent);
            Assert.That(opt.Step, Is.EqualTo(t));
            Assert.That(opt.LastLearningRate, Is.EqualTo(o.Schedule.At(t)));
        }
        foreach (var (r, w, name) in new[] { (refs[0].Item1, w1, "w"), (refs[1].Item1, w2, "norm") })
            for (int i = 0; i < w.Length; i++)
            {
                Assert.That(w[i], Is.EqualTo(r.W[i]).Within(2e-6 + 2e-6 * Math.Abs(r.W[i])), $"{name}[{i}]");
                Assert.That(opt.FirstMoment(name)[i], Is.EqualTo(r.M[i]).Within(1e-6), $"m {name}[{i}]");
                Assert.That(opt.SecondMoment(name)[i], Is.EqualTo(r.V[i]).Within(1e-6), $"v {name}[{i}]");
            }
    }

    [Test]
    public void ClippingScalesTheGradientToMaxNorm()
    {
        var w = new float[20];
        var g = Enumerable.Range(0, 20).Select(i => (float)(i - 7.5)).ToArray();
        double norm = Math.Sqrt(g.Sum(x => (double)x * x));
        var opt = new AdamW(new AdamWOptions { MaxGradNorm = 2.0, Beta1 = 0.9 });
        opt.Add("w", w, g);
        Assert.That(opt.Update(), Is.EqualTo(norm).Within(1e-10).Percent);
        // m = (1 − β₁) · g · 2 / (‖g‖ + 1e-6): the first moment holds the clipped gradient.
        var m = opt.FirstMoment("w").ToArray();
        double clippedNorm = Math.Sqrt(m.Sum(x => (double)x * x)) / 0.1;
        Assert.That(clippedNorm, Is.EqualTo(2.0).Within(1e-5));
        for (int i = 0; i < 20; i++) Assert.That(m[i] / 0.1, Is.EqualTo(g[i] * 2 / (norm + 1e-6)).Within(1e-5));

        // Below the threshold nothing is scaled.
        var opt2 = new AdamW(new AdamWOptions { MaxGradNorm = 1000 });
        var g2 = (float[])g.Clone();
        opt2.Add("w", new float[20], g2);
        opt2.Update();
        for (int i = 0; i < 20; i++) Assert.That(opt2.FirstMoment("w")[i], Is.EqualTo(0.1 * g[i]).Within(1e-5));
    }

    [Test]
    public void NonFiniteGradientsSkipTheUpdate()
    {
        var w = new float[] { 1, 2, 3 };
        var g = new float[] { 0.1f, float.NaN, 0.2f };
        var opt = new AdamW(new AdamWOptions());
        opt.Add("w", w, g);
        Assert.That(double.IsNaN(opt.Update()));
        Assert.That(opt.Step, Is.EqualTo(0));
        Assert.That(w, Is.EqualTo(new float[] { 1, 2, 3 }));
    }

    [Test]
    public void ScheduleWarmsUpLinearlyThenDecaysByCosineToTheFloor()
    {
        var s = new LearningRateSchedule(1.0, warmupSteps: 4, totalSteps: 14, minLr: 0.1);
        Assert.That(s.At(1), Is.EqualTo(0.25).Within(1e-15));
        Assert.That(s.At(2), Is.EqualTo(0.5).Within(1e-15));
        Assert.That(s.At(4), Is.EqualTo(1.0).Within(1e-15));
        Assert.That(s.At(9), Is.EqualTo(0.55).Within(1e-12));                // halfway: (peak + floor) / 2
        Assert.That(s.At(6), Is.EqualTo(0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * 0.2))).Within(1e-12));
        Assert.That(s.At(14), Is.EqualTo(0.1));
        Assert.That(s.At(1000), Is.EqualTo(0.1));
        for (int t = 5; t < 14; t++) Assert.That(s.At(t + 1), Is.LessThan(s.At(t)), $"decreasing at {t}");
        Assert.That(LearningRateSchedule.Constant(0.3).At(77), Is.EqualTo(0.3));
        Assert.That(() => s.At(0), Throws.TypeOf<ArgumentOutOfRangeException>());
        Assert.That(() => new LearningRateSchedule(1, 5, 3), Throws.ArgumentException.With.Message.Contains("warmup"));
        Assert.That(() => new LearningRateSchedule(1, minLr: 2), Throws.ArgumentException.With.Message.Contains("min lr"));
    }

    [Test]
    public void LeastSquaresConverges()
    {
        // min ‖A w − b‖² / n with b = A x*; the gradient is written into the registered buffer each step.
        var rng = new Random(5);
        const int n = 40, d = 6;
        var a = new double[n, d];
        var xStar = Enumerable.Range(0, d).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        var b = new double[n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < d; j++) a[i, j] = rng.NextDouble() * 2 - 1;
            for (int j = 0; j < d; j++) b[i] += a[i, j] * xStar[j];
        }
        var w = new float[d];
        var g = new float[d];
        var opt = new AdamW(new AdamWOptions
        {
            Schedule = new LearningRateSchedule(0.05, warmupSteps: 10, totalSteps: 1500, minLr: 1e-4),
            WeightDecay = 0, MaxGradNorm = 1.0,
        });
        opt.Add("w", w, g);
        double Loss()
        {
            double l = 0;
            for (int i = 0; i < n; i++)
            {
                double r = -b[i];
                for (int j = 0; j < d; j++) r += a[i, j] * w[j];
                l += r * r / n;
            }
            return l;
        }
        double initial = Loss();
        for (int step = 0; step < 1500; step++)
        {
            Array.Clear(g);
            for (int i = 0; i < n; i++)
            {
                double r = -b[i];
                for (int j = 0; j < d; j++) r += a[i, j] * w[j];
                for (int j = 0; j < d; j++) g[j] += (float)(2 * r * a[i, j] / n);
            }
            opt.Update();
        }
        Assert.That(Loss(), Is.LessThan(1e-6 * initial));
        for (int j = 0; j < d; j++) Assert.That(w[j], Is.EqualTo(xStar[j]).Within(1e-3));
    }

    [Test]
    public void StateRoundTripsThroughAFileAndContinuesIdentically()
    {
        var rng = new Random(9);
        var o = new AdamWOptions { Schedule = new LearningRateSchedule(0.01, 2, 10, 0.001) };
        float[] Rand(int k) => Enumerable.Range(0, k).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var wA = Rand(33); var gA = new float[33];
        var opt = new AdamW(o);
        opt.Add("w", wA, gA);
        var grads = Enumerable.Range(0, 5).Select(_ => Rand(33)).ToArray();
        for (int t = 0; t < 3; t++) { grads[t].CopyTo(gA, 0); opt.Update(); }
        var path = Path.Combine(_dir, "adamw.state");
        opt.Save(path);
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary file left behind");

        var wB = (float[])wA.Clone(); var gB = new float[33];
        var resumed = new AdamW(o);
        resumed.Add("w", wB, gB);
        resumed.Load(path);
        Assert.That(resumed.Step, Is.EqualTo(3));
        for (int t = 3; t < 5; t++)
        {
            grads[t].CopyTo(gA, 0); opt.Update();
            grads[t].CopyTo(gB, 0); resumed.Update();
        }
        Assert.That(wB, Is.EqualTo(wA));
    }

    [Test]
    public void BadStateFilesAndArgumentsAreClearErrors()
    {
        var opt = new AdamW(new AdamWOptions());
        opt.Add("w", new float[4], new float[4]);
        Assert.That(() => opt.Add("w", new float[4], new float[4]), Throws.ArgumentException.With.Message.Contains("'w' is already"));
        Assert.That(() => opt.Add("x", new float[4], new float[3]), Throws.ArgumentException.With.Message.Contains("'x'"));
        Assert.That(() => new AdamW(new AdamWOptions { Beta2 = 1 }), Throws.ArgumentException.With.Message.Contains("beta2"));

        var missing = Path.Combine(_dir, "missing.state");
        Assert.That(() => opt.Load(missing), Throws.TypeOf<FileNotFoundException>().With.Message.Contains(missing));

        var path = Path.Combine(_dir, "a.state");
        opt.Save(path);
        var bytes = File.ReadAllBytes(path);
        var truncated = Path.Combine(_dir, "t.state");
        File.WriteAllBytes(truncated, bytes[..^5]);
        Assert.That(() => opt.Load(truncated), Throws.TypeOf<InvalidDataException>().With.Message.Contains(truncated).And.Message.Contains("moments of 'w'"));
        var garbage = Path.Combine(_dir, "g.state");
        File.WriteAllBytes(garbage, new byte[] { 3, 65, 66, 67, 0, 0 });
        Assert.That(() => opt.Load(garbage), Throws.TypeOf<InvalidDataException>().With.Message.Contains("magic"));

        var other = new AdamW(new AdamWOptions());
        other.Add("w", new float[5], new float[5]);
        Assert.That(() => other.Load(path), Throws.TypeOf<InvalidDataException>().With.Message.Contains("length"));
        var renamed = new AdamW(new AdamWOptions());
        renamed.Add("v", new float[4], new float[4]);
        Assert.That(() => renamed.Load(path), Throws.TypeOf<InvalidDataException>().With.Message.Contains("'v' was expected"));
    }
}
