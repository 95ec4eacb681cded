namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>A policy model and its optional draft model, disposed together (see <see cref="GenerationModels.Open"/>).</summary>
public sealed class ModelPair(TransformerModel policy, TransformerModel? draft) : IDisposable
{
    public TransformerModel Policy { get; } = policy;
    public TransformerModel? Draft { get; } = draft;

    public void Dispose()
    {
        Draft?.Dispose();
        Policy.Dispose();
    }
}
