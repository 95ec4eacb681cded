namespace RLHFSpec.Compute.Rlhf;

/// <summary>One preference: for <paramref name="Prompt"/>, <paramref name="Chosen"/> is better than <paramref name="Rejected"/>. <paramref name="Origin"/> names where it came from (file and line) for error messages.</summary>
public sealed record PreferencePair(string Prompt, string Chosen, string Rejected, string Origin = "");
