using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// ONNX Runtime sessions over a decoder's whole-sequence graphs for the inference and training stages: token
/// log-probs (old policy, reference), full logits (the draft's teacher), and the policy loss with gradients. Weights
/// are fed from any <see cref="TensorArena"/> with the model's tensor names (the live policy, the frozen
/// reference), never copied.
/// </summary>
public sealed class PolicyGraphs : IDisposable
{
    private readonly OnnxSession _logProbs, _logits;
    private OnnxSession? _loss;

    public PolicyGraphs(DecoderGraphSpec spec, OnnxSessionOptions options)
    {
        Spec = spec;
        Options = options;
        var lp = new GraphBuilder("token_logprobs");
        var v = DecoderTrainingGraph.DeclareInputs(lp, spec, ElementType.Float);
        var targets = lp.Input(DecoderTrainingGraph.Targets, ElementType.Int64, "B", "T");
        lp.Output(LossOps.TokenLogProbs(lp, DecoderTrainingGraph.Logits(lp, spec, v), targets), DecoderTrainingGraph.LogProbs);
        _logProbs = new OnnxSession(lp.ToBytes(), options);
        _logits = new OnnxSession(DecoderTrainingGraph.LogitsGraph(spec, ElementType.Float).ToBytes(), options);
    }

    public DecoderGraphSpec Spec { get; }
    public OnnxSessionOptions Options { get; }

    /// <summary>Log-probs [B, T] of the batch's targets under <paramref name="weights"/>.</summary>
    public float[] LogProbs(TensorArena weights, SequenceBatch batch)
    {
        var result = new float[batch.Batch * batch.Length];
        using var output = OrtTensors.Over(result, batch.Batch, batch.Length);
        var inputs = Inputs(weights, batch, withTargets: true);
        try { _logProbs.Run(inputs.Values, new Dictionary<string, OrtValue> { [DecoderTrainingGraph.LogProbs] = output }); }
        finally { inputs.Dispose(); }
        return result;
    }

    /// <summary>Logits [B, T, V] under <paramref name="weights"/>.</summary>
    public float[] FullLogits(TensorArena weights, SequenceBatch batch)
    {
        var result = new float[(long)batch.Batch * batch.Length * Spec.VocabSize];
        using var output = OrtTensors.Over(result, batch.Batch, batch.Length, Spec.VocabSize);
        var inputs = Inputs(weights, batch, withTargets: false);
        try { _logits.Run(inputs.Values, new Dictionary<string, OrtValue> { [DecoderTrainingGraph.LogitsOutput] = output }); }
        finally { inputs.Dispose(); }
        return result;
    }

    /// <summary>
    /// One policy-loss forward and backward: writes d loss / d weight into <paramref name="gradients"/> (same names),
    /// returns the loss and the new log-probs [B, T].
    /// </summary>
    public (double Loss, float[] LogProbs) PolicyLossGradients(TensorArena weights, TensorArena gradients, SequenceBatch batch,
        float[] oldLogProbs, float[] advantages, float[]? refLogProbs, PolicyLossSettings settings)
    {
        _loss ??= new OnnxSession(DecoderTrainingGraph.PolicyLossGraph(Spec, ElementType.Float, settings.KlBeta, settings.ClipLow, settings.ClipHigh, settings.Aggregation, settings.EntropyCoef).ToBytes(), Options);
        var loss = new float[1];
        var logp = new float[batch.Batch * batch.Length];
        var inputs = Inputs(weights, batch, withTargets: true);
        using var vOld = OrtTensors.Over(oldLogProbs, batch.Batch, batch.Length);
        using var vAdv = OrtTensors.Over(advantages, batch.Batch, batch.Length);
        using var vMask = OrtTensors.Over(batch.LossMask, batch.Batch, batch.Length);
        using var vRef = refLogProbs is null ? null : OrtTensors.Over(refLogProbs, batch.Batch, batch.Length);
        using var vLoss = OrtTensors.Over(loss, Array.Empty<long>());
        using var vLogp = OrtTensors.Over(logp, batch.Batch, batch.Length);
        try
        {
            var values = inputs.Values;
            values[DecoderTrainingGraph.OldLogProbs] = vOld;
            values[DecoderTrainingGraph.Advantages] = vAdv;
            values[DecoderTrainingGraph.LossMask] = vMask;
            if (settings.KlBeta > 0) values[DecoderTrainingGraph.RefLogProbs] = vRef ?? throw new ArgumentException("reference log-probs are needed when the KL coefficient is > 0", nameof(refLogProbs));
            var outputs = gradients.Values(DecoderTrainingGraph.GradientPrefix);
            outputs[DecoderTrainingGraph.Loss] = vLoss;
            outputs[DecoderTrainingGraph.LogProbs] = vLogp;
            _loss.Run(values, outputs);
        }
        finally { inputs.Dispose(); }
        return (loss[0], logp);
    }

    /// <summary>
    /// One optimizer step's policy loss and gradients over a minibatch: each micro-batch's forward and backward, the
    /// gradients summed into <paramref name="accumulator"/>'s arena weighted by the loss's aggregation (rows_k / rows for
    /// a mean over sequences, tokens_k / tokens for a mean over tokens: the KL term and the entropy bonus aggregate as
    /// the surrogate), so the sum is the unsplit minibatch's gradient; returns the loss so combined.
    /// </summary>
    internal double PolicyLossGradients(TensorArena weights, GradientAccumulator accumulator, RolloutMinibatch minibatch, PolicyLossSettings settings) =>
        accumulator.Accumulate(minibatch.Weights(settings.Aggregation), (k, gradients) =>
        {
            var mb = minibatch.Micro[k];
            return PolicyLossGradients(weights, gradients, mb.Batch, mb.Old, mb.Advantages!, mb.Reference, settings).Loss;
        });

    /// <summary>The sequence inputs as OrtValues over the batch's arrays plus the weights by name; dispose after the run.</summary>
    internal static BatchInputs Inputs(TensorArena weights, SequenceBatch batch, bool withTargets)
    {
        var owned = new List<OrtValue>
        {
            OrtTensors.Over(batch.InputIds, batch.Batch, batch.Length),
            OrtTensors.Over(batch.Positions, batch.Batch, batch.Length),
            OrtTensors.Over(batch.AttentionMask, batch.Batch, batch.Length),
        };
        var values = weights.Values();
        values[DecoderTrainingGraph.InputIds] = owned[0];
        values[DecoderTrainingGraph.PositionIds] = owned[1];
        values[DecoderTrainingGraph.AttentionMask] = owned[2];
        if (withTargets)
        {
            owned.Add(OrtTensors.Over(batch.Targets, batch.Batch, batch.Length));
            values[DecoderTrainingGraph.Targets] = owned[^1];
        }
        return new BatchInputs(values, owned);
    }

    internal sealed record BatchInputs(Dictionary<string, OrtValue> Values, List<OrtValue> Owned) : IDisposable
    {
        public void Dispose() { foreach (var v in Owned) v.Dispose(); }
    }

    public void Dispose()
    {
        _logProbs.Dispose();
        _logits.Dispose();
        _loss?.Dispose();
    }
}

/// <summary>The policy loss's coefficients (PPO clip range, KL to the reference, aggregation, entropy bonus).</summary>
public sealed record PolicyLossSettings(double KlBeta = 0.02, double ClipLow = 0.2, double ClipHigh = 0.2,
    LossAggregation Aggregation = LossAggregation.SequenceMean, double EntropyCoef = 0);
