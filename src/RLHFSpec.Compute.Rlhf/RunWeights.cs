using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The checkpoints a run starts from, loaded and checked: the policy (its tokenizer, config and stop tokens), the
/// draft (compatible with the policy), and a reward model when the reward names one. A load that fails part way
/// disposes what it loaded.
/// </summary>
internal sealed class RunWeights : IDisposable
{
    /// <param name="policySource">The policy checkpoint: the configured one, or the latest checkpoint's on resume.</param>
    /// <param name="draftSource">The draft checkpoint, or null for none.</param>
    /// <param name="filePrompts">Training prompts from a file (each must encode), or null.</param>
    public RunWeights(string policySource, string? draftSource, RlhfConfig config, RewardRule reward, IReadOnlyList<string>? filePrompts, OnnxSessionOptions session)
    {
        try
        {
            using var checkpoint = Checkpoint.Load(policySource);
            Tokenizer = checkpoint.Tokenizer;
            if (filePrompts is not null)
                for (int i = 0; i < filePrompts.Count; i++) Tokenizer.EncodeChecked(filePrompts[i], $"prompts '{config.Prompts}': prompt {i}");
            PolicyConfig = checkpoint.Config;
            Policy = TransformerWeights.FromCheckpoint(checkpoint);
            checkpoint.CheckFinite(Policy.Arena);
            Stops.UnionWith(checkpoint.StopTokenIds());
            if (draftSource is not null) (DraftConfig, Draft) = LoadDraft(checkpoint, draftSource);
            if (reward.ModelFolder is { } rewardFolder) RewardModel = LoadRewardModel(checkpoint, rewardFolder, config, session);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public TextTokenizer Tokenizer { get; } = null!;
    public ModelConfig PolicyConfig { get; } = null!;
    public TransformerWeights Policy { get; } = null!;

    /// <summary>The policy's stop tokens.</summary>
    public HashSet<int> Stops { get; } = new();

    public ModelConfig? DraftConfig { get; }
    public TransformerWeights? Draft { get; }

    /// <summary>The reward model the reward names (model:DIR), or null.</summary>
    public RewardModel? RewardModel { get; }

    private static (ModelConfig, TransformerWeights) LoadDraft(Checkpoint policy, string draftSource)
    {
        using var draftCheckpoint = Checkpoint.Load(draftSource);
        Checkpoint.CheckCompatibleDraft(policy, draftCheckpoint);
        var draft = TransformerWeights.FromCheckpoint(draftCheckpoint);
        try { draftCheckpoint.CheckFinite(draft.Arena); }
        catch
        {
            draft.Dispose();
            throw;
        }
        return (draftCheckpoint.Config, draft);
    }

    private static RewardModel LoadRewardModel(Checkpoint policy, string rewardFolder, RlhfConfig config, OnnxSessionOptions session)
    {
        if (!Directory.Exists(rewardFolder))
            throw new DirectoryNotFoundException($"reward '{config.Reward}': '{rewardFolder}' is not a folder (a reward model from rlhfspec train-rm)");
        using var rewardCheckpoint = Checkpoint.Load(rewardFolder);
        Checkpoint.CheckSameVocabulary(policy, rewardCheckpoint, "reward model");
        return RewardModel.Load(rewardCheckpoint, session);
    }

    public void Dispose()
    {
        RewardModel?.Dispose();
        Draft?.Dispose();
        Policy?.Dispose();
    }
}
