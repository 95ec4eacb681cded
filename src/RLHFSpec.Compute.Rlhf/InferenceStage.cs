using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The inference stage (forward passes only): rewards of the responses, ragged minibatches bucketed by length (split
/// into micro-batches), old and reference log-probs of each micro-batch, and what the algorithm adds (PPO: the
/// critic's values, then GAE; GRPO: group-normalised advantages).
/// </summary>
/// <param name="taskPrompts">Whether the training prompts are the default task's (for the accuracy of a reward model's scores).</param>
internal sealed class InferenceStage(RlhfConfig config, RunWeights weights, RunModels models, IRlhfAlgorithm algorithm, RewardScorer scorer, bool taskPrompts)
{
    public IterationBatch Run(IterationBatch batch, IRlhfObserver? observer)
    {
        var results = batch.Results;
        observer?.StageStarted(batch.Iteration, "inference", results.Count);
        var (rewards, accuracy) = scorer.Score(batch.Prompts, results, taskPrompts);
        var scored = algorithm.Prepare(new ScoredRollouts(results, rewards));
        var split = Minibatches(results);
        var micro = new List<RolloutMicroBatch>();
        double klSum = 0;
        long tokens = 0;
        int done = 0;
        foreach (var mb in split.SelectMany(m => m))
        {
            var evaluated = algorithm.Evaluate(LogProbs(mb), scored);
            micro.Add(evaluated);
            for (int t = 0; t < evaluated.Old.Length; t++)
                if (evaluated.Batch.LossMask[t] != 0) { klSum += evaluated.Old[t] - evaluated.Reference[t]; tokens++; }
            observer?.StageAdvanced(done += mb.Rows.Length);
        }
        var (targets, critic) = algorithm.Targets(micro, scored);
        var minibatches = new List<RolloutMinibatch>();
        int at = 0;
        foreach (var m in split)
        {
            minibatches.Add(new RolloutMinibatch(targets.Skip(at).Take(m.Count).ToArray()));
            at += m.Count;
        }
        return batch with { Rewards = rewards, Accuracy = accuracy, Minibatches = minibatches, Kl = tokens == 0 ? 0 : klSum / tokens, Critic = critic };
    }

    /// <summary>
    /// The responses ordered by sequence length (then index) in chunks of <c>minibatch_size</c>, each in consecutive
    /// micro-batches of at most <c>micro_batch_size</c> (each padded to its own longest sequence).
    /// </summary>
    private List<List<RolloutMicroBatch>> Minibatches(IReadOnlyList<SampleResult> results)
    {
        var order = Enumerable.Range(0, results.Count).OrderBy(i => results[i].Request.Prompt.Length + results[i].Tokens.Length).ThenBy(i => i).ToArray();
        return order.Chunk(config.MinibatchSize).Select(minibatch => minibatch.Chunk(config.MicroBatchSize).Select(rows => new RolloutMicroBatch(rows,
            SequenceBatch.From(rows.Select(i => (results[i].Request.Prompt, results[i].Tokens)).ToArray(), weights.Tokenizer.PadId ?? 0))).ToList()).ToList();
    }

    /// <summary>The rollout policy's log-probs, and the reference's always: the KL metric needs them even when the loss has no KL term.</summary>
    private RolloutMicroBatch LogProbs(RolloutMicroBatch mb)
    {
        var old = models.PolicyGraphs.LogProbs(weights.Policy.Arena, mb.Batch);
        return mb with { Old = old, Reference = models.PolicyGraphs.LogProbs(models.Reference.Arena, mb.Batch) };
    }
}
