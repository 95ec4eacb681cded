namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The draft refresh stage: the updated policy's logits on the iteration's rollouts give its entropy and, when the
/// draft is refreshed, the teacher of a forward-KL distillation of the draft toward the policy (acceptance before and
/// after); micro-batch by micro-batch (<c>draft_refresh_steps</c> steps each), so its logits stay bounded too.
/// The distillation runs only when it is due (<see cref="Due"/>): the draft's acceptance on the first micro-batch,
/// before any step, against what the last refresh reached (<c>draft_refresh_tolerance</c>); otherwise the stage
/// measures the draft's acceptance and distils nothing.
/// </summary>
internal sealed class DraftRefreshStage(RlhfConfig config, RunWeights weights, RunModels models)
{
    /// <param name="reference">The draft's acceptance after the last iteration that distilled it (from the run's
    /// metrics, so a resumed run decides as the uninterrupted one did); null when none has.</param>
    public IterationBatch Run(IterationBatch batch, IRlhfObserver? observer, double? reference)
    {
        double entropySum = 0;
        long entropyTokens = 0;
        double klBefore = 0, klAfter = 0, accBefore = 0, accAfter = 0;
        long draftTokens = 0;
        bool? distil = null; // decided on the first micro-batch that has response tokens
        // The teacher's logits [B, T, vocab] and the distillation graphs are bounded by micro_batch_size rows.
        var micro = batch.Minibatches.SelectMany(m => m.Micro).ToList();
        observer?.StageStarted(batch.Iteration, "draft refresh", micro.Count);
        int done = 0;
        foreach (var mb in micro)
        {
            var teacher = models.PolicyGraphs.FullLogits(weights.Policy.Arena, mb.Batch);
            (double h, long n) = Entropy(mb.Batch, teacher, weights.Policy.Spec.VocabSize);
            entropySum += h;
            entropyTokens += n;
            if (models.Distiller is { } distiller && n > 0)
            {
                Func<float[]> draftLogits = () => models.DraftGraphs!.FullLogits(weights.Draft!.Arena, mb.Batch);
                var (kl, acc) = DraftDistiller.Compare(mb.Batch, teacher, draftLogits());
                distil ??= Due(acc, reference, config.DraftRefreshTolerance);
                var stats = distil.Value
                    ? distiller.Refresh(mb.Batch, teacher, draftLogits, config.DraftRefreshSteps, before: (kl, acc))
                    : new DraftRefreshStats(kl, kl, acc, acc, 0);
                klBefore += stats.KlBefore * n; klAfter += stats.KlAfter * n; accBefore += stats.AcceptanceBefore * n; accAfter += stats.AcceptanceAfter * n;
                draftTokens += n;
            }
            observer?.StageAdvanced(++done);
        }
        double? Mean(double sum) => draftTokens == 0 ? null : sum / draftTokens;
        return batch with
        {
            Refresh = new DraftRefreshStageResult(entropyTokens == 0 ? 0 : entropySum / entropyTokens, Mean(klBefore), Mean(klAfter), Mean(accBefore), Mean(accAfter))
            {
                Distilled = models.Distiller is null ? null : distil == true,
            },
        };
    }

    /// <summary>
    /// Whether to distil: always without a <paramref name="reference"/> (no refresh yet), else when the draft's
    /// acceptance has fallen more than <paramref name="tolerance"/> below it (a negative tolerance: always).
    /// </summary>
    public static bool Due(double acceptance, double? reference, double tolerance) =>
        reference is not { } r || tolerance < 0 || acceptance < r - tolerance;

    /// <summary>The acceptance the draft reached at the latest iteration of <paramref name="history"/> that distilled it, or null.</summary>
    public static double? Reference(IReadOnlyList<IterationMetrics> history)
    {
        for (int i = history.Count - 1; i >= 0; i--)
            if (history[i].DraftRefreshed == true) return history[i].DraftAcceptanceAfter;
        return null;
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
