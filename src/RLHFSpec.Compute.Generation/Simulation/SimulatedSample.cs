namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>A sample of the simulated workload: prompt length, true response length, and the predictor's guess.</summary>
public sealed record SimulatedSample(long Id, int PromptTokens, int ResponseTokens, int PredictedTokens);
