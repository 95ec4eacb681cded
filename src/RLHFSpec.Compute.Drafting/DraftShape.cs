namespace RLHFSpec.Compute.Drafting;

/// <summary>What a strategy drafts: nothing, a chain, or a tree.</summary>
public enum DraftShape { Off, Chain, Tree }
