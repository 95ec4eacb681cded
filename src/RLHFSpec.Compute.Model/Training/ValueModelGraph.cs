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
    public const string LastToken = "last_token", Rewards = "rewards";

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

    /// <summary>
    /// A reward model's Bradley–Terry loss with gradients, over P preference pairs fed as 2P whole sequences (rows
    /// 0..P−1 the chosen responses, rows P..2P−1 the rejected ones, each with its prompt): the reward of a row is its
    /// value at its last real token (extra input <see cref="LastToken"/> [2P, T], 1 there and 0 elsewhere); the loss
    /// (output <see cref="DecoderTrainingGraph.Loss"/>) is the mean over pairs of −log σ(r_chosen − r_rejected), written
    /// as −log_softmax([r_chosen, r_rejected])[0] so that it stays finite for any margin, plus
    /// <paramref name="rewardL2"/> × the mean of r² (keeps rewards near 0; BT alone fixes only their differences).
    /// Outputs also the rewards [2P] (<see cref="Rewards"/>) and d loss / d weight for every weight (grad_NAME).
    /// </summary>
    public static GraphBuilder PreferenceLossGraph(DecoderGraphSpec spec, ElementType type, double rewardL2 = 0)
    {
        if (!(rewardL2 >= 0) || !double.IsFinite(rewardL2))
            throw new ArgumentException($"PreferenceLossGraph: reward_l2 must be a finite number >= 0, got {rewardL2}", nameof(rewardL2));
        var g = new GraphBuilder("preference_loss");
        var v = DeclareInputs(g, spec, type);
        var last = g.Input(LastToken, type, "B", "T");
        var rewards = g.ReduceSum(g.Mul(ValuesOf(g, spec, v), last), new[] { 1 }, keepDims: false);   // [2P]
        var pairs = g.Transpose(g.Reshape(rewards, 2, -1), 1, 0);                                       // [P, 2]: chosen, rejected
        var logChosen = g.Slice(g.LogSoftmax(pairs, -1), new long[] { 0 }, new long[] { 1 }, new[] { 1 }); // [P, 1]
        var loss = g.Neg(g.ReduceMean(logChosen, new[] { 0, 1 }, keepDims: false));
        if (rewardL2 > 0) loss = g.Add(loss, g.Mul(g.ReduceMean(g.Mul(rewards, rewards), new[] { 0 }, keepDims: false), g.Scalar(rewardL2, type)));
        g.Output(rewards, Rewards);
        g.Output(loss, DecoderTrainingGraph.Loss);
        Autodiff.Gradients(g, loss, Tensors(spec).Select(t => v[t.Name]).ToArray(), DecoderTrainingGraph.GradientPrefix);
        return g;
    }
}
