namespace RLHFSpec.Compute.Generation;

/// <summary>Why a sample stopped: it emitted an end-of-sequence token, reached its token limit, or the context limit.</summary>
public enum FinishReason { Stop, Length, Context }
