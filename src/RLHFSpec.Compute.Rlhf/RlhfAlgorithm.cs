namespace RLHFSpec.Compute.Rlhf;

/// <summary>The RL algorithm of a run (config key <c>algorithm</c>: <c>grpo</c> or <c>ppo</c>; see <see cref="SettingText"/>).</summary>
public enum RlhfAlgorithm
{
    /// <summary>Group-normalised advantages, no critic.</summary>
    Grpo,
    /// <summary>Clipped policy loss with a critic and GAE.</summary>
    Ppo,
}
