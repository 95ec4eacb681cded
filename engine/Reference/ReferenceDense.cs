namespace RLHFSpec.Compute.Engine.Reference;

/// <summary>
/// Plain host references of the dense ops (projection, RMSNorm, RoPE, SwiGLU, residual add, embedding) in double
/// precision, scalar loops in the order the definitions read, independent of the backends' code. The Vulkan dense
/// kernels are tested against these.
/// </summary>
public static class ReferenceDense
{
    /// <summary>
    /// y[t, yColumn + o] (+)= Σ_i x[t, i]·w[o, i] (+ bias[o]); also returns Σ|terms| per output (the scale of the rounding
    /// error a float32 kernel may make) in <paramref name="magnitude"/> // [tokens, outDim].
    /// </summary>
    /// <param name="x">// [tokens, xStride]</param>
    /// <param name="w">// [outDim, inDim]</param>
    /// <param name="y">// [tokens, yStride], modified in place</param>
    public static void Project(float[] x, int tokens, int inDim, int xStride, float[] w, int outDim, float[]? bias,
        double[] y, int yStride, int yColumn, bool accumulate, double[] magnitude)
    {
        for (int t = 0; t < tokens; t++)
            for (int o = 0; o < outDim; o++)
            {
                double sum = 0, mag = 0;
                for (int i = 0; i < inDim; i++)
                {
                    double term = (double)x[(long)t * xStride + i] * w[(long)o * inDim + i];
                    sum += term;
                    mag += Math.Abs(term);
                }
                if (bias != null) { sum += bias[o]; mag += Math.Abs(bias[o]); }
                long at = (long)t * yStride + yColumn + o;
                if (accumulate) { mag += Math.Abs(y[at]); sum += y[at]; }
                y[at] = sum;
                magnitude[(long)t * outDim + o] = mag;
            }
    }

    /// <summary>y[r] = x[src]·w / sqrt(mean(x[src]²) + eps), src = rowMap[r] or r.</summary>
    public static double[] RmsNorm(float[] x, float[] w, int rows, int dim, double eps, int[]? rowMap = null)
    {
        var y = new double[(long)rows * dim];
        for (int r = 0; r < rows; r++)
        {
            long src = (long)(rowMap?[r] ?? r) * dim;
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[src + i] * x[src + i];
            double scale = 1 / Math.Sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++) y[(long)r * dim + i] = x[src + i] * scale * w[i];
        }
        return y;
    }

    /// <summary>
    /// Rotary embedding of heads [0, heads) of each token, angle = position·θ^(−2i/headDim) in double:
    /// (a, b) → (a·cos − b·sin, b·cos + a·sin) for the pair (i, i + headDim/2).
    /// </summary>
    public static double[] Rope(float[] data, int tokens, int heads, int headDim, int rowStride, int[] positions, double theta)
    {
        var y = data.Select(v => (double)v).ToArray();
        int half = headDim / 2;
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++)
                {
                    long at = (long)t * rowStride + h * headDim;
                    double angle = positions[t] * Math.Pow(theta, -2.0 * i / headDim);
                    double a = data[at + i], b = data[at + i + half];
                    y[at + i] = a * Math.Cos(angle) - b * Math.Sin(angle);
                    y[at + i + half] = b * Math.Cos(angle) + a * Math.Sin(angle);
                }
        return y;
    }

    /// <summary>silu(gate)·up elementwise.</summary>
    public static double[] SwiGlu(float[] gate, float[] up) =>
        gate.Select((g, e) => g / (1 + Math.Exp(-(double)g)) * up[e]).ToArray();

    /// <summary>y + x elementwise.</summary>
    public static double[] ResidualAdd(float[] x, float[] y) => y.Select((v, e) => (double)v + x[e]).ToArray();

    /// <summary>Rows tokens[t] of table // [vocab, dim].</summary>
    public static float[] Embed(int[] tokens, float[] table, int dim)
    {
        var x = new float[(long)tokens.Length * dim];
        for (int t = 0; t < tokens.Length; t++) Array.Copy(table, (long)tokens[t] * dim, x, (long)t * dim, dim);
        return x;
    }
}
