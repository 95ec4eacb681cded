namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The draft refresh stage: the updated policy's logits on the iteration's rollouts give its entropy and, when the
/// draft is refreshed, the teacher of a forward-KL distillation of the draft toward the policy (acceptance before and
/// after); micro-batch by micro-batch (<c>draft_refresh_steps</c> steps each), so its logits stay bounded too.
/// The draft's acceptance is measured every iteration; it is distilled only when <see cref="Due"/> says so.
/// </summary>
internal sealed class DraftRefreshStage(RlhfConfig config, RunWeights weights, RunModels models)
{
    /// <param name="distil">Whether to distil the draft this iteration (<see cref="Due"/>); when not, the stage
    /// measures its acceptance only.</param>
    public IterationBatch Run(IterationBatch batch, IRlhfObserver? observer, bool distil)
    {
        double entropySum = 0;
        long entropyTokens = 0;
        double klBefore = 0, klAfter = 0, accBefore = 0, accAfter = 0;
        long draftTokens = 0;
        var draftClock = new System.Diagnostics.Stopwatch(); // the draft's part: its forwards and distillation steps
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
            if (models.Distiller is { } distiller)
            {
                draftClock.Start();
                Func<float[]> draftLogits = () => models.DraftGraphs!.FullLogits(weights.Draft!.Arena, mb.Batch);
                DraftRefreshStats stats;
                if (distil) stats = distiller.Refresh(mb.Batch, teacher, draftLogits, config.DraftRefreshSteps);
                else
                {
                    var (kl, acc) = DraftDistiller.Compare(mb.Batch, teacher, draftLogits());
                    stats = new DraftRefreshStats(kl, kl, acc, acc, 0);
                }
                klBefore += stats.KlBefore * n; klAfter += stats.KlAfter * n; accBefore += stats.AcceptanceBefore * n; accAfter += stats.AcceptanceAfter * n;
                draftTokens += n;
                draftClock.Stop();
            }
            observer?.StageAdvanced(++done);
        }
        double? Mean(double sum) => draftTokens == 0 ? null : sum / draftTokens;
        return batch with
        {
            Refresh = new DraftRefreshStageResult(entropyTokens == 0 ? 0 : entropySum / entropyTokens, Mean(klBefore), Mean(klAfter), Mean(accBefore), Mean(accAfter))
            {
                Distilled = models.Distiller is null ? null : distil,
                DraftSeconds = models.Distiller is null ? null : draftClock.Elapsed.TotalSeconds,
            },
        };
    }

    /// <summary>
    /// Whether the next iteration distils the draft, from the run's metrics so far (so a resumed run decides as the
    /// uninterrupted one did). The acceptance a distillation reaches on its own rollouts overstates what the draft
    /// then does on fresh ones (measured on the medium set: 4 steps a micro-batch raised it by 0.02–0.05 on its own
    /// batch, and the next iteration's rollouts gave 0.01–0.08 less every time), so the reference is the acceptance measured on the iteration after the last distillation, before
    /// anything else changed the draft; the next distillation is due once an iteration's acceptance, measured before
    /// any step, has fallen more than <paramref name="tolerance"/> below it. So:
    /// <list type="bullet">
    /// <item>no distillation yet in the run (or metrics written before <c>draft_refreshed</c> existed): due;</item>
    /// <item>the last iteration distilled: not due (this one measures the reference);</item>
    /// <item>else due when the last iteration's acceptance &lt; reference − tolerance;</item>
    /// <item>a negative tolerance: always due.</item>
    /// </list>
    /// </summary>
    public static bool Due(IReadOnlyList<IterationMetrics> history, double tolerance)
    {
        if (tolerance < 0) return true;
        int last = -1;
        for (int i = history.Count - 1; i >= 0 && last < 0; i--)
            if (history[i].DraftRefreshed == true) last = i;
        if (last < 0) return true;
        if (last == history.Count - 1) return false;
        if (history[last + 1].DraftAcceptanceBefore is not { } reference || history[^1].DraftAcceptanceBefore is not { } latest) return true;
        return latest < reference - tolerance;
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
