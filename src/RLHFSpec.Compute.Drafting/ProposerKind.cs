namespace RLHFSpec.Compute.Drafting;

/// <summary>Who drafts: nobody, the small draft model, or the model-free suffix tree.</summary>
public enum ProposerKind { None, DraftModel, Suffix }
