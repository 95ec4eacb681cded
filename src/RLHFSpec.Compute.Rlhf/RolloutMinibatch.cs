namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// One minibatch of an iteration's rollouts as the inference stage leaves it for training: the rows (indices into the
/// iteration's responses), their ragged sequences as one padded batch, and every per-token tensor [B, T] the losses read.
/// </summary>
/// <param name="Rows">[B] indices of the minibatch's responses in the iteration's request order.</param>
internal sealed record RolloutMinibatch(int[] Rows, SequenceBatch Batch)
{
    /// <summary>[B, T] log-probs of the rollout policy (before the update).</summary>
    public float[] Old { get; init; } = [];

    /// <summary>[B, T] log-probs of the frozen reference.</summary>
    public float[] Reference { get; init; } = [];

    /// <summary>[B, T] advantages of the response tokens (0 elsewhere).</summary>
    public float[]? Advantages { get; init; }

    /// <summary>PPO: [B, T] the critic's values before the update.</summary>
    public float[]? Values { get; init; }

    /// <summary>PPO: [B, T] the critic's targets (GAE returns).</summary>
    public float[]? Returns { get; init; }

    /// <summary>PPO: [B] the critic's value after the last token of a response that was cut (0 for one that ended).</summary>
    public double[]? ValueAtCut { get; init; }
}
