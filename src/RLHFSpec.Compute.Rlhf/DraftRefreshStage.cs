namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The draft refresh stage: the updated policy's logits on the iteration's rollouts give its entropy and, when the
/// draft is refreshed, the teacher of a forward-KL distillation of the draft toward the policy (acceptance before and after).
/// </summary>
internal sealed class DraftRefreshStage(RlhfConfig config, RunWeights weights, RunModels models)
{
    public IterationBatch Run(IterationBatch batch, IRlhfObserver? observer)
    {
        double entropySum = 0;
        long entropyTokens = 0;
        double klBefore = 0, klAfter = 0, accBefore = 0, accAfter = 0;
        long draftTokens = 0;
        observer?.StageStarted(batch.Iteration, "draft refresh", batch.Minibatches.Count);
        int done = 0;
        foreach (var mb in batch.Minibatches)
        {
            var teacher = models.PolicyGraphs.FullLogits(weights.Policy.Arena, mb.Batch);
            (double h, long n) = Entropy(mb.Batch, teacher, weights.Policy.Spec.VocabSize);
            entropySum += h;
            entropyTokens += n;
            if (models.Distiller is { } distiller)
            {
                var stats = distiller.Refresh(mb.Batch, teacher, () => models.DraftGraphs!.FullLogits(weights.Draft!.Arena, mb.Batch), config.DraftRefreshSteps);
                klBefore += stats.KlBefore * n; klAfter += stats.KlAfter * n; accBefore += stats.AcceptanceBefore * n; accAfter += stats.AcceptanceAfter * n;
                draftTokens += n;
            }
            observer?.StageAdvanced(++done);
        }
        double? Mean(double sum) => draftTokens == 0 ? null : sum / draftTokens;
        return batch with
        {
            Refresh = new DraftRefreshStageResult(entropyTokens == 0 ? 0 : entropySum / entropyTokens, Mean(klBefore), Mean(klAfter), Mean(accBefore), Mean(accAfter)),
        };
    }

    /// <summary>Summed entropy of the softmax of <paramref name="logits"/> [B, T, vocab] over the loss-masked positions, and their count.</summary>
    private static (double Sum, long Count) Entropy(SequenceBatch batch, float[] logits, int vocab)
    {
        double sum = 0;
        long count = 0;
        for (int at = 0; at < batch.Batch * batch.Length; at++)
        {
            if (batch.LossMask[at] == 0) continue;
            var row = logits.AsSpan(at * vocab, vocab);
            double max = double.NegativeInfinity;
            foreach (var l in row) max = Math.Max(max, l);
            double z = 0, e = 0;
            foreach (var l in row) { double w = Math.Exp(l - max); z += w; e += w * (l - max); }
            sum += Math.Log(z) - e / z;
            count++;
        }
        return (sum, count);
    }
}
