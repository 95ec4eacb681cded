namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>How a sample's draft children were produced; decides the lossless acceptance rule.</summary>
public enum DraftKind
{
    /// <summary>
    /// Children sampled i.i.d. from the draft distribution q (warped draft logits at the parent's row):
    /// SpecInfer multi-step speculative sampling; a chain is the one-child case (Leviathan/Chen).
    /// </summary>
    Sampled = 0,
    /// <summary>
    /// Children chosen deterministically (top-k expansion, suffix tree): q is one-hot per child, i.e.
    /// sampling from p restricted to the untried children.
    /// </summary>
    Deterministic = 1,
}
