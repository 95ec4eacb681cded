using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>Draft refresh of one iteration: loss and the draft's expected acceptance before and after.</summary>
/// <param name="KlBefore">Mean forward KL(policy ‖ draft) per response token before the refresh.</param>
/// <param name="AcceptanceBefore">Mean Σ_v min(p(v), q(v)) per response token: the probability that one speculative
/// token drawn from the draft is accepted, before the refresh.</param>
public sealed record DraftRefreshStats(double KlBefore, double KlAfter, double AcceptanceBefore, double AcceptanceAfter, int Steps);

/// <summary>
/// Draft refresh: distils a draft model toward the current policy on fresh rollouts by minimising the forward
/// KL(policy ‖ draft) over response tokens — cross-entropy to the policy's distribution, gradients from the
/// autodiff, AdamW in place on the draft's weights (which the draft's generation model reads) — so acceptance does
/// not decay as the policy drifts.
/// </summary>
public sealed class DraftDistiller : IDisposable
{
    public const string TeacherLogits = DecoderTrainingGraph.TeacherLogits;
    private readonly DecoderGraphSpec _spec;
    private readonly TensorArena _weights, _gradients;
    private readonly OnnxSession _loss;
    private readonly AdamW _optimizer;

    public DraftDistiller(DecoderGraphSpec draftSpec, TensorArena draftWeights, OnnxSessionOptions options, AdamWOptions optimizer)
    {
        _spec = draftSpec;
        _weights = draftWeights;
        _gradients = new TensorArena(draftSpec.Tensors());
        _loss = new OnnxSession(LossGraph(draftSpec, ElementType.Float).ToBytes(), options);
        _optimizer = new AdamW(optimizer);
        foreach (var name in draftWeights.Names) _optimizer.Add(name, draftWeights.Memory(name), _gradients.Memory(name), DecoderGraphSpec.Decays(name));
    }

    public AdamW Optimizer => _optimizer;

    /// <summary>The distillation graph (<see cref="DecoderTrainingGraph.DistillationLossGraph"/>): forward KL(policy ‖ draft) per response token.</summary>
    public static GraphBuilder LossGraph(DecoderGraphSpec spec, ElementType type) => DecoderTrainingGraph.DistillationLossGraph(spec, type);

    /// <summary>
    /// <paramref name="steps"/> AdamW steps on <paramref name="batch"/> with the policy's logits
    /// <paramref name="teacherLogits"/> [B, T, V]; the draft's logits before and after come from <paramref name="draftLogits"/>
    /// (a logits session over the draft's weights) for the stats.
    /// </summary>
    public DraftRefreshStats Refresh(SequenceBatch batch, float[] teacherLogits, Func<float[]> draftLogits, int steps)
    {
        if (steps < 0) throw new ArgumentOutOfRangeException(nameof(steps), steps, "must be >= 0");
        var (klBefore, accBefore) = Compare(batch, teacherLogits, draftLogits());
        var inputs = PolicyGraphs.Inputs(_weights, batch, withTargets: false);
        using var vTeacher = OrtTensors.Over(teacherLogits, batch.Batch, batch.Length, _spec.VocabSize);
        using var vMask = OrtTensors.Over(batch.LossMask, batch.Batch, batch.Length);
        var loss = new float[1];
        using var vLoss = OrtTensors.Over(loss, Array.Empty<long>());
        try
        {
            var values = inputs.Values;
            values[TeacherLogits] = vTeacher;
            values[DecoderTrainingGraph.LossMask] = vMask;
            var outputs = _gradients.Values(DecoderTrainingGraph.GradientPrefix);
            outputs[DecoderTrainingGraph.Loss] = vLoss;
            for (int s = 0; s < steps; s++)
            {
                _loss.Run(values, outputs);
                _optimizer.Update();
            }
        }
        finally { inputs.Dispose(); }
        var (klAfter, accAfter) = Compare(batch, teacherLogits, draftLogits());
        return new DraftRefreshStats(klBefore, klAfter, accBefore, accAfter, steps);
    }

    /// <summary>Mean KL(p ‖ q) and mean Σ min(p, q) over the loss-masked positions (p = softmax(teacher), q = softmax(draft)).</summary>
    public static (double Kl, double Acceptance) Compare(SequenceBatch batch, ReadOnlySpan<float> teacher, ReadOnlySpan<float> draft)
    {
        int vocab = teacher.Length / (batch.Batch * batch.Length);
        var p = new double[vocab];
        var q = new double[vocab];
        double kl = 0, acc = 0;
        int count = 0;
        for (int at = 0; at < batch.Batch * batch.Length; at++)
        {
            if (batch.LossMask[at] == 0) continue;
            Softmax(teacher.Slice(at * vocab, vocab), p);
            Softmax(draft.Slice(at * vocab, vocab), q);
            for (int v = 0; v < vocab; v++)
            {
                if (p[v] > 0) kl += p[v] * (Math.Log(p[v]) - Math.Log(Math.Max(q[v], 1e-300)));
                acc += Math.Min(p[v], q[v]);
            }
            count++;
        }
        return count == 0 ? (0, 1) : (kl / count, acc / count);
    }

    private static void Softmax(ReadOnlySpan<float> logits, double[] into)
    {
        double max = double.NegativeInfinity;
        foreach (var l in logits) max = Math.Max(max, l);
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += into[i] = Math.Exp(logits[i] - max);
        for (int i = 0; i < logits.Length; i++) into[i] /= sum;
    }

    public void Dispose()
    {
        _loss.Dispose();
        _gradients.Dispose();
    }
}
