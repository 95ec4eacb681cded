using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>Scores responses: a reward model in minibatches bucketed by length, or a rule on each decoded response.</summary>
/// <param name="rewardModel">The reward model, or null to score with <paramref name="rule"/>.</param>
/// <param name="minibatchSize">Sequences per reward-model forward pass.</param>
internal sealed class RewardScorer(TextTokenizer tokenizer, RewardRule rule, RewardModel? rewardModel, int minibatchSize)
{
    /// <summary>
    /// Rewards of responses to <paramref name="prompts"/> (indexed by each request's prompt index) and the share
    /// answered with full reward; with a reward model on default-task prompts, that share is the task's exact verifier's
    /// (a reward model's scores are not 0/1).
    /// </summary>
    public (double[] Rewards, double Accuracy) Score(IReadOnlyList<string> prompts, IReadOnlyList<SampleResult> results, bool taskPrompts)
    {
        var (_, rewards, correct) = ScoreEach(prompts, results, taskPrompts);
        return (rewards, correct.Count(c => c) / (double)correct.Length);
    }

    /// <summary>Each response's text, reward, and whether it is correct (full reward; the task's verifier under a reward model on task prompts).</summary>
    public (string[] Texts, double[] Rewards, bool[] Correct) ScoreEach(IReadOnlyList<string> prompts, IReadOnlyList<SampleResult> results, bool taskPrompts)
    {
        var texts = results.Select(r => tokenizer.Decode(r.Tokens, skipSpecialTokens: true)).ToArray();
        var rewards = rewardModel is { } rm
            ? rm.Score(results.Select((r, i) => rm.Sequence(r.Request.Prompt, texts[i])).ToArray(), minibatchSize).Select(x => (double)x).ToArray()
            : results.Select((r, i) => rule.Score(prompts[r.Request.PromptIndex], texts[i])).ToArray();
        var correct = rewardModel is not null && taskPrompts
            ? results.Select((r, i) => ArithmeticTask.Reward(prompts[r.Request.PromptIndex], texts[i]) >= 1).ToArray()
            : rewards.Select(x => x >= 1).ToArray();
        return (texts, rewards, correct);
    }
}
