namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>What the selector needs to know of a live sample: its identity, committed context and tokens left.</summary>
public readonly record struct LiveSample(long SampleId, int ContextLength, int RemainingTokens);
