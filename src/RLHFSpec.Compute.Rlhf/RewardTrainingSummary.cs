using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>What <see cref="RewardModelTrainer"/> did, written beside the model as <see cref="RewardModelTrainer.SummaryFile"/>.</summary>
public sealed record RewardTrainingSummary
{
    [JsonPropertyName("base")] public required string Base { get; init; }
    [JsonPropertyName("pairs")] public required string Pairs { get; init; }
    [JsonPropertyName("train_pairs")] public int TrainPairs { get; init; }
    [JsonPropertyName("eval_pairs")] public int EvalPairs { get; init; }
    /// <summary>Pairs left out because chosen and rejected are the same token ids (they carry no preference).</summary>
    [JsonPropertyName("dropped_identical_pairs")] public int DroppedIdentical { get; init; }
    /// <summary>Held-out pairwise accuracy before training (ties count ½).</summary>
    [JsonPropertyName("initial_eval_accuracy")] public double? InitialEvalAccuracy { get; init; }
    [JsonPropertyName("initial_eval_loss")] public double? InitialEvalLoss { get; init; }
    [JsonPropertyName("epochs")] public required IReadOnlyList<RewardEpoch> Epochs { get; init; }
    [JsonPropertyName("options")] public required RewardTrainingOptions Options { get; init; }
    [JsonPropertyName("steps")] public long Steps { get; init; }
    [JsonPropertyName("seconds")] public double Seconds { get; init; }
}
