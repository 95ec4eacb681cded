namespace RLHFSpec.Compute.Generation.Selection;

/// <summary>
/// What the selector needs to know of a live sample: its identity, committed context, tokens left, and the tokens its
/// draft model has not seen yet (fed by the draft's catch-up forward before it drafts; 1 = the pending token only).
/// </summary>
public readonly record struct LiveSample(long SampleId, int ContextLength, int RemainingTokens, int DraftLag = 1);
