using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Model.Training;

/// <summary>
/// Graphs of a scalar-head decoder — PPO's value model (critic) or a reward model: the decoder trunk and final norm
/// of <see cref="DecoderTrainingGraph"/> (same weight names as the policy) and a linear head <see cref="ScoreWeight"/>
/// [1, H] (transformers' LlamaForSequenceClassification layout, no bias) giving one scalar per position.
/// </summary>
/// <remarks>
/// Inputs are the sequence inputs of <see cref="DecoderTrainingGraph"/> (input_ids, position_ids, attention_mask
/// [B, T]) plus the weights of <see cref="Tensors"/>. The value at position t reads tokens 0..t: with the inputs of a
/// prompt+response batch (the sequence without its last token) it is V(state before the token at t + 1), aligned
/// with the policy's log-prob of that token; a reward model's score is the value at the last real token of an input
/// that includes the whole sequence.
/// </remarks>
public static class ValueModelGraph
{
    public const string ScoreWeight = "score.weight";
    public const string Values = "values", OldValues = "old_values", Returns = "returns";

    /// <summary>The weights: the decoder's without lm_head, then score.weight [1, H].</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Tensors(DecoderGraphSpec spec) =>
        spec.Tensors().Where(t => t.Name != "lm_head.weight").Append((ScoreWeight, new long[] { 1, spec.HiddenSize })).ToList();

    /// <summary>Declares <see cref="Tensors"/> and the sequence inputs.</summary>
    public static Dictionary<string, Value> DeclareInputs(GraphBuilder g, DecoderGraphSpec spec, ElementType type) =>
        DecoderTrainingGraph.DeclareInputs(g, spec, Tensors(spec), type);

    /// <summary>The scalar at every position: [B, T].</summary>
    public static Value ValuesOf(GraphBuilder g, DecoderGraphSpec spec, IReadOnlyDictionary<string, Value> v)
    {
        var hidden = DecoderTrainingGraph.Hidden(g, spec, v);                            // [B, T, H]
        var score = g.MatMul(hidden, g.Transpose(v[ScoreWeight], 1, 0));                 // [B, T, 1]
        return g.Squeeze(score, -1);
    }

    /// <summary>A forward-only graph: values [B, T] (output <see cref="Values"/>).</summary>
    public static GraphBuilder ValuesGraph(DecoderGraphSpec spec, ElementType type)
    {
        var g = new GraphBuilder("values");
        var v = DeclareInputs(g, spec, type);
        g.Output(ValuesOf(g, spec, v), Values);
        return g;
    }

    /// <summary>
    /// PPO's critic loss with gradients: <paramref name="coefficient"/> × masked token mean of
    /// <see cref="LossOps.ClippedValueLossPerToken"/> (clip range <paramref name="clip"/>) — output
    /// <see cref="DecoderTrainingGraph.Loss"/> — the values [B, T] (output <see cref="Values"/>) and d loss / d weight
    /// for every weight (outputs grad_NAME). Extra inputs: old_values, returns, loss_mask [B, T].
    /// </summary>
    public static GraphBuilder ValueLossGraph(DecoderGraphSpec spec, ElementType type, double clip = 0.2, double coefficient = 1.0)
    {
        if (!(coefficient > 0) || !double.IsFinite(coefficient))
            throw new ArgumentException($"ValueLossGraph: coefficient must be a finite number > 0, got {coefficient}", nameof(coefficient));
        var g = new GraphBuilder("value_loss");
        var v = DeclareInputs(g, spec, type);
        var old = g.Input(OldValues, type, "B", "T");
        var returns = g.Input(Returns, type, "B", "T");
        var mask = g.Input(DecoderTrainingGraph.LossMask, type, "B", "T");
        var values = ValuesOf(g, spec, v);
        var loss = LossOps.MaskedMean(g, LossOps.ClippedValueLossPerToken(g, values, old, returns, clip), mask);
        if (coefficient != 1.0) loss = g.Mul(loss, g.Scalar(coefficient, type));
        g.Output(values, Values);
        g.Output(loss, DecoderTrainingGraph.Loss);
        Autodiff.Gradients(g, loss, Tensors(spec).Select(t => v[t.Name]).ToArray(), DecoderTrainingGraph.GradientPrefix);
        return g;
    }
}
