using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>One held-out prompt's answer at one evaluation: a line of <c>evaluations/iter-N.jsonl</c> in the run folder.</summary>
/// <param name="Correct">Answered with full reward (with a reward model on task prompts: by the task's exact verifier).</param>
public sealed record EvaluationAnswer(
    [property: JsonPropertyName("prompt")] string Prompt,
    [property: JsonPropertyName("response")] string Response,
    [property: JsonPropertyName("reward")] double Reward,
    [property: JsonPropertyName("correct")] bool Correct,
    [property: JsonPropertyName("finish_reason")] string FinishReason);
