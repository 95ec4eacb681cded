namespace RLHFSpec.Compute.Model.Tasks;

/// <summary>One prompt of a task with its reference response (used to pretrain) and the exact answer (the reward's key).</summary>
public sealed record TaskSample(string Prompt, string ReferenceResponse, long Answer);
