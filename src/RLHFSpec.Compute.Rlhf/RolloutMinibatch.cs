using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// One minibatch of an iteration's rollouts (<c>minibatch_size</c> rows, one optimizer step) as consecutive
/// micro-batches of at most <c>micro_batch_size</c> rows, each one forward/backward pass; the step's gradient is the
/// weighted sum of the micro-batches' gradients (<see cref="Weights"/>).
/// </summary>
internal sealed record RolloutMinibatch(IReadOnlyList<RolloutMicroBatch> Micro)
{
    /// <summary>Rows (responses) of the minibatch.</summary>
    public int Rows => Micro.Sum(m => m.Rows.Length);

    /// <summary>Loss-masked (response) tokens of the minibatch.</summary>
    public long Tokens => Micro.Sum(m => (long)m.Batch.ResponseLength.Sum());

    /// <summary>
    /// The weight of each micro-batch's loss (and gradient) so that their weighted sum is the whole minibatch's loss:
    /// a mean over sequences weighs micro-batch k by rows_k / rows, a mean over tokens by tokens_k / tokens (a
    /// minibatch without tokens weighs every micro-batch 0: each one's loss is 0 too).
    /// </summary>
    public double[] Weights(LossAggregation aggregation)
    {
        if (aggregation == LossAggregation.SequenceMean) return Micro.Select(m => (double)m.Rows.Length / Rows).ToArray();
        long tokens = Tokens;
        return Micro.Select(m => tokens == 0 ? 0 : (double)m.Batch.ResponseLength.Sum() / tokens).ToArray();
    }
}
