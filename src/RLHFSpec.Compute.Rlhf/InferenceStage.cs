using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The inference stage (forward passes only): rewards of the responses, ragged minibatches bucketed by length, old
/// and reference log-probs of each, and what the algorithm adds (PPO: the critic's values, then GAE; GRPO:
/// group-normalised advantages).
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
        var minibatches = new List<RolloutMinibatch>();
        double klSum = 0;
        long tokens = 0;
        int done = 0;
        foreach (var mb in Minibatches(results))
        {
            var evaluated = algorithm.Evaluate(LogProbs(mb), scored);
            minibatches.Add(evaluated);
            for (int t = 0; t < evaluated.Old.Length; t++)
                if (evaluated.Batch.LossMask[t] != 0) { klSum += evaluated.Old[t] - evaluated.Reference[t]; tokens++; }
            observer?.StageAdvanced(done += mb.Rows.Length);
        }
        var (targets, critic) = algorithm.Targets(minibatches, scored);
        return batch with { Rewards = rewards, Accuracy = accuracy, Minibatches = targets, Kl = tokens == 0 ? 0 : klSum / tokens, Critic = critic };
    }

    /// <summary>The responses ordered by sequence length (then index) in chunks of <c>minibatch_size</c>.</summary>
    private List<RolloutMinibatch> Minibatches(IReadOnlyList<SampleResult> results)
    {
        var order = Enumerable.Range(0, results.Count).OrderBy(i => results[i].Request.Prompt.Length + results[i].Tokens.Length).ThenBy(i => i).ToArray();
        return order.Chunk(config.MinibatchSize).Select(rows => new RolloutMinibatch(rows,
            SequenceBatch.From(rows.Select(i => (results[i].Request.Prompt, results[i].Tokens)).ToArray(), weights.Tokenizer.PadId ?? 0))).ToList();
    }

    /// <summary>The rollout policy's log-probs, and the reference's always: the KL metric needs them even when the loss has no KL term.</summary>
    private RolloutMinibatch LogProbs(RolloutMinibatch mb)
    {
        var old = models.PolicyGraphs.LogProbs(weights.Policy.Arena, mb.Batch);
        return mb with { Old = old, Reference = models.PolicyGraphs.LogProbs(models.Reference.Arena, mb.Batch) };
    }
}
