using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// GRPO: each response's reward normalised within its prompt's group is the advantage of every one of its tokens;
/// no critic; the policy loss is the clipped surrogate plus k3 KL to the reference, averaged per sequence.
/// </summary>
internal sealed class GrpoAlgorithm(RlhfConfig config) : IRlhfAlgorithm
{
    public RlhfAlgorithm Kind => RlhfAlgorithm.Grpo;
    public ValueModel? Critic => null;
    public PolicyLossSettings PolicyLoss { get; } = new(config.KlBeta, config.Clip, config.Clip, LossAggregation.SequenceMean);

    public ScoredRollouts Prepare(ScoredRollouts rollouts) => rollouts with
    {
        ResponseAdvantages = Advantages.GroupNormalized(rollouts.Rewards, rollouts.Results.Select(r => r.Request.PromptIndex).ToArray()),
    };

    /// <summary>Broadcasts each row's response advantage to its response tokens.</summary>
    public RolloutMinibatch Evaluate(RolloutMinibatch minibatch, ScoredRollouts rollouts)
    {
        var advantages = rollouts.ResponseAdvantages!;
        return minibatch with
        {
            Advantages = minibatch.Batch.Scatter(minibatch.Rows.Select(i => Enumerable.Repeat((float)advantages[i], rollouts.Results[i].Tokens.Length).ToArray()).ToArray()),
        };
    }

    public (IReadOnlyList<RolloutMinibatch> Minibatches, CriticStatistics? Critic) Targets(IReadOnlyList<RolloutMinibatch> minibatches, ScoredRollouts rollouts) =>
        (minibatches, null);

    public double? TrainCritic(RolloutMinibatch minibatch, int iteration) => null;

    public void SaveCheckpoint(string folder, TextTokenizer tokenizer) { }

    public void LoadOptimizer(string folder) { }

    public void Dispose() { }
}
