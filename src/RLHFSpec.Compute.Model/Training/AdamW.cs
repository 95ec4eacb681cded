using System.Numerics;
using System.Runtime.InteropServices;
using System.Text;

namespace RLHFSpec.Compute.Model.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter) over host float buffers, updating the weights IN PLACE so that every graph and
/// the engine, which read the same buffers, see the new weights on their next run. One <see cref="Update"/>:
/// global L2 norm of all gradients → clip factor min(1, maxNorm / (norm + 1e-6)) (as torch's clip_grad_norm_) →
/// learning rate from the schedule at the new step → per element, with g the clipped gradient:
/// m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; w ← w(1 − lr·λ) − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε),
/// where λ is 0 for parameters registered without decay (norms, biases). SIMD via <see cref="Vector{T}"/>.
/// </summary>
public sealed class AdamW
{
    private const string Magic = "RLHFSPEC-ADAMW-1";
    private readonly List<AdamWParameter> _parameters = new();
    private readonly AdamWOptions _options;

    public AdamW(AdamWOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
    }

    /// <summary>Updates done so far (the next update is step <c>Step + 1</c>).</summary>
    public long Step { get; private set; }

    /// <summary>Learning rate used by the last update.</summary>
    public double LastLearningRate { get; private set; }

    /// <summary>Registers a parameter: its weight buffer and the buffer the backward pass writes its gradient to.</summary>
    public void Add(string name, Memory<float> weights, ReadOnlyMemory<float> gradients, bool decay = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (weights.Length != gradients.Length)
            throw new ArgumentException($"AdamW: parameter '{name}' has {weights.Length} weights but {gradients.Length} gradients", nameof(gradients));
        if (_parameters.Any(p => p.Name == name))
            throw new ArgumentException($"AdamW: parameter '{name}' is already registered", nameof(name));
        if (Step > 0) throw new InvalidOperationException($"AdamW: cannot add parameter '{name}' after {Step} updates");
        _parameters.Add(new AdamWParameter(name, weights, gradients, decay));
    }

    public IReadOnlyList<string> ParameterNames => _parameters.Select(p => p.Name).ToArray();

    public ReadOnlySpan<float> FirstMoment(string name) => Find(name).FirstMoment;
    public ReadOnlySpan<float> SecondMoment(string name) => Find(name).SecondMoment;

    /// <summary>
    /// One optimizer step over all parameters. Returns the global gradient norm before clipping. If that norm is
    /// not finite (NaN/∞ gradients) nothing is updated, the step counter does not advance, and the norm is
    /// returned so the caller can skip the batch or stop.
    /// </summary>
    public double Update()
    {
        double norm = GlobalGradientNorm();
        if (!double.IsFinite(norm)) return norm;
        double max = _options.MaxGradNorm;
        double clip = max > 0 && double.IsFinite(max) ? Math.Min(1.0, max / (norm + 1e-6)) : 1.0;

        long t = Step + 1;
        double lr = _options.Schedule.At(t);
        double b1 = _options.Beta1, b2 = _options.Beta2;
        double bc1 = 1 - Math.Pow(b1, t), bc2 = 1 - Math.Pow(b2, t);
        var k = new Coefficients(
            (float)clip, (float)b1, (float)(1 - b1), (float)b2, (float)(1 - b2),
            StepSize: (float)(lr / bc1), InvSqrtBc2: (float)(1 / Math.Sqrt(bc2)), Eps: (float)_options.Epsilon,
            Decay: 1f);
        foreach (var p in _parameters)
        {
            var kp = k with { Decay = p.Decay ? (float)(1 - lr * _options.WeightDecay) : 1f };
            Apply(p.Weights.Span, p.Gradients.Span, p.FirstMoment, p.SecondMoment, kp);
        }
        Step = t;
        LastLearningRate = lr;
        return norm;
    }

    /// <summary>L2 norm over every registered gradient; squares are widened to double before summing (exact enough
    /// for billions of elements, and equal to a scalar double reference up to summation order).</summary>
    public double GlobalGradientNorm()
    {
        var acc = Vector<double>.Zero;
        double tail = 0;
        foreach (var p in _parameters)
        {
            var g = p.Gradients.Span;
            var vecs = MemoryMarshal.Cast<float, Vector<float>>(g);
            foreach (var v in vecs)
            {
                Vector.Widen(v, out var lo, out var hi);
                acc += lo * lo + hi * hi;
            }
            for (int i = vecs.Length * Vector<float>.Count; i < g.Length; i++) tail += g[i] * (double)g[i];
        }
        return Math.Sqrt(Vector.Sum(acc) + tail);
    }

    private readonly record struct Coefficients(float Clip, float B1, float OneMinusB1, float B2, float OneMinusB2,
        float StepSize, float InvSqrtBc2, float Eps, float Decay);

    private static void Apply(Span<float> w, ReadOnlySpan<float> g, Span<float> m, Span<float> v, Coefficients k)
    {
        int vectorized = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var wv = MemoryMarshal.Cast<float, Vector<float>>(w);
            var gv = MemoryMarshal.Cast<float, Vector<float>>(g);
            var mv = MemoryMarshal.Cast<float, Vector<float>>(m);
            var vv = MemoryMarshal.Cast<float, Vector<float>>(v);
            for (int i = 0; i < wv.Length; i++)
            {
                var gi = gv[i] * k.Clip;
                var mi = mv[i] * k.B1 + gi * k.OneMinusB1;
                var vi = vv[i] * k.B2 + gi * gi * k.OneMinusB2;
                mv[i] = mi;
                vv[i] = vi;
                wv[i] = wv[i] * k.Decay - k.StepSize * mi / (Vector.SquareRoot(vi) * k.InvSqrtBc2 + new Vector<float>(k.Eps));
            }
            vectorized = wv.Length * Vector<float>.Count;
        }
        for (int i = vectorized; i < w.Length; i++)
        {
            float gi = g[i] * k.Clip;
            float mi = m[i] * k.B1 + gi * k.OneMinusB1;
            float vi = v[i] * k.B2 + gi * gi * k.OneMinusB2;
            m[i] = mi;
            v[i] = vi;
            w[i] = w[i] * k.Decay - k.StepSize * mi / (MathF.Sqrt(vi) * k.InvSqrtBc2 + k.Eps);
        }
    }

    /// <summary>Saves step and moments (not the weights, which live in the model's own files).</summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var full = Path.GetFullPath(path);
        var tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var s = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            using (var bw = new BinaryWriter(s, Encoding.UTF8))
            {
                bw.Write(Magic);
                bw.Write(Step);
                bw.Write(_parameters.Count);
                foreach (var p in _parameters)
                {
                    bw.Write(p.Name);
                    bw.Write((long)p.FirstMoment.Length);
                    bw.Write(MemoryMarshal.AsBytes(p.FirstMoment.AsSpan()));
                    bw.Write(MemoryMarshal.AsBytes(p.SecondMoment.AsSpan()));
                }
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    /// <summary>Restores a state saved by <see cref="Save"/> for the same parameters (names, order, sizes).</summary>
    public void Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: AdamW state file not found", path);
        using var s = File.OpenRead(path);
        using var br = new BinaryReader(s, Encoding.UTF8);
        string field = "magic";
        try
        {
            if (br.ReadString() != Magic) throw new InvalidDataException($"{path}: not an AdamW state file (field 'magic')");
            field = "step";
            long step = br.ReadInt64();
            if (step < 0) throw new InvalidDataException($"{path}: field 'step' is negative ({step})");
            field = "count";
            int count = br.ReadInt32();
            if (count != _parameters.Count)
                throw new InvalidDataException($"{path}: field 'count' is {count} but the optimizer has {_parameters.Count} parameters");
            var loaded = new List<(float[] M, float[] V)>();
            foreach (var p in _parameters)
            {
                field = $"name of parameter '{p.Name}'";
                var name = br.ReadString();
                if (name != p.Name) throw new InvalidDataException($"{path}: parameter '{name}' where '{p.Name}' was expected (field 'name')");
                field = $"length of '{p.Name}'";
                long n = br.ReadInt64();
                if (n != p.FirstMoment.Length)
                    throw new InvalidDataException($"{path}: parameter '{p.Name}' has length {n} but the optimizer's has {p.FirstMoment.Length} (field 'length')");
                field = $"moments of '{p.Name}'";
                var m = new float[n];
                var v = new float[n];
                br.BaseStream.ReadExactly(MemoryMarshal.AsBytes(m.AsSpan()));
                br.BaseStream.ReadExactly(MemoryMarshal.AsBytes(v.AsSpan()));
                loaded.Add((m, v));
            }
            if (s.Position != s.Length) throw new InvalidDataException($"{path}: {s.Length - s.Position} trailing bytes after the last parameter");
            // Commit only after the whole file was read and checked.
            for (int i = 0; i < _parameters.Count; i++)
            {
                loaded[i].M.CopyTo(_parameters[i].FirstMoment, 0);
                loaded[i].V.CopyTo(_parameters[i].SecondMoment, 0);
            }
            Step = step;
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException($"{path}: truncated while reading field '{field}'");
        }
        catch (FormatException)
        {
            throw new InvalidDataException($"{path}: malformed field '{field}'");
        }
    }

    private AdamWParameter Find(string name) =>
        _parameters.FirstOrDefault(p => p.Name == name) ?? throw new ArgumentException($"AdamW: no parameter '{name}'", nameof(name));
}
