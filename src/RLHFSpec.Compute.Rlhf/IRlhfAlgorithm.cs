using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// What distinguishes GRPO from PPO in the RLHF loop: how advantages (and returns) come from the rewards, which loss
/// the policy takes, and whether a critic exists, is trained and is checkpointed. The stages call it at fixed points:
/// inference after scoring (<see cref="Prepare"/>), after each minibatch's log-probs (<see cref="Evaluate"/>) and after
/// all of them (<see cref="Targets"/>); training after each policy step (<see cref="TrainCritic"/>).
/// </summary>
internal interface IRlhfAlgorithm : IDisposable
{
    RlhfAlgorithm Kind { get; }

    /// <summary>The critic (PPO), or null.</summary>
    ValueModel? Critic { get; }

    /// <summary>The policy loss's coefficients.</summary>
    PolicyLossSettings PolicyLoss { get; }

    /// <summary>Before the forward passes: what follows from the rewards alone (GRPO's group-normalised advantages).</summary>
    ScoredRollouts Prepare(ScoredRollouts rollouts);

    /// <summary>After a minibatch's log-probs: its per-token quantities from further forward passes or from <paramref name="rollouts"/>.</summary>
    RolloutMinibatch Evaluate(RolloutMinibatch minibatch, ScoredRollouts rollouts);

    /// <summary>After every minibatch: their advantages and returns, and the critic's statistics (null without a critic).</summary>
    (IReadOnlyList<RolloutMinibatch> Minibatches, CriticStatistics? Critic) Targets(IReadOnlyList<RolloutMinibatch> minibatches, ScoredRollouts rollouts);

    /// <summary>After the policy's step on <paramref name="minibatch"/>: the critic's step; its value loss, or null without a critic.</summary>
    double? TrainCritic(RolloutMinibatch minibatch, int iteration);

    /// <summary>Writes the algorithm's own state (the critic and its optimizer) into a checkpoint folder being written.</summary>
    void SaveCheckpoint(string folder, TextTokenizer tokenizer);

    /// <summary>Reads the optimizer state <see cref="SaveCheckpoint"/> wrote.</summary>
    void LoadOptimizer(string folder);

    /// <summary>The run's algorithm; PPO's critic is the run's own on resume (<paramref name="latest"/>), else the configured one, else the policy's trunk.</summary>
    /// <param name="latest">The checkpoint a resume starts from, or null for a new run.</param>
    /// <param name="runFolder">The run folder, for messages.</param>
    static IRlhfAlgorithm Create(RlhfConfig config, string? latest, string policyFolder, string runFolder, RunWeights weights, OnnxSessionOptions session) =>
        config.Algorithm switch
        {
            RlhfAlgorithm.Grpo => new GrpoAlgorithm(config),
            RlhfAlgorithm.Ppo => PpoAlgorithm.Load(config, latest, policyFolder, runFolder, weights, session),
            _ => throw new ArgumentOutOfRangeException(nameof(config), config.Algorithm, "unknown algorithm"),
        };
}
