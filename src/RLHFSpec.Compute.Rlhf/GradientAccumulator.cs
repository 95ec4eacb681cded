using System.Numerics.Tensors;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Gradient accumulation over a minibatch's micro-batches into an optimizer's gradient arena: the first micro-batch's
/// pass writes the arena, later ones a scratch arena of the same tensors (made on first use) that is added with its
/// weight. With one micro-batch the pass writes the arena and nothing is scaled, so the step is the unsplit one bit for bit.
/// </summary>
internal sealed class GradientAccumulator(TensorArena gradients) : IDisposable
{
    private TensorArena? _scratch;

    /// <summary>
    /// Runs <paramref name="pass"/> (micro-batch index, arena to write d loss / d weight into; returns the loss) for
    /// every weight; leaves Σ_k w_k · gradient_k in the arena and returns Σ_k w_k · loss_k.
    /// </summary>
    public double Accumulate(IReadOnlyList<double> weights, Func<int, TensorArena, double> pass)
    {
        if (weights.Count == 1) return pass(0, gradients);
        double loss = weights[0] * pass(0, gradients);
        var sum = gradients.All.Span;
        TensorPrimitives.Multiply(sum, (float)weights[0], sum);
        _scratch ??= new TensorArena(gradients.Names.Select(n => (n, gradients.Shape(n))));
        for (int k = 1; k < weights.Count; k++)
        {
            loss += weights[k] * pass(k, _scratch);
            TensorPrimitives.MultiplyAdd(_scratch.All.Span, (float)weights[k], sum, sum);
        }
        return loss;
    }

    public void Dispose() => _scratch?.Dispose();
}
