using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>
/// The weights a generation stage runs, loaded once: the policy's checkpoint (tokenizer, stop tokens) and weights,
/// and an optional draft checked against the policy's vocabulary; both checked finite. From them it builds the
/// runtime models: a policy and draft <see cref="TransformerModel"/> pair on one backend (<see cref="Open"/>), or a
/// cluster's per-instance models (<see cref="Instances"/>). Whatever a step builds is disposed again if a later step
/// of the same build throws; the weights and checkpoint are disposed with this object.
/// </summary>
public sealed class GenerationModels : IDisposable
{
    private GenerationModels(string policyFolder, string? draftFolder, Checkpoint checkpoint, TransformerWeights policy, TransformerWeights? draft)
    {
        (PolicyFolder, DraftFolder, Checkpoint, Policy, Draft) = (policyFolder, draftFolder, checkpoint, policy, draft);
    }

    public string PolicyFolder { get; }
    public string? DraftFolder { get; }

    /// <summary>The policy's checkpoint: its tokenizer, config and stop tokens.</summary>
    public Checkpoint Checkpoint { get; }

    public TransformerWeights Policy { get; }
    public TransformerWeights? Draft { get; }

    /// <summary>Loads the policy (and the draft, when <paramref name="draftFolder"/> is not null).</summary>
    public static GenerationModels Load(string policyFolder, string? draftFolder)
    {
        var checkpoint = Checkpoint.Load(policyFolder);
        TransformerWeights? policy = null, draft = null;
        try
        {
            policy = TransformerWeights.FromCheckpoint(checkpoint);
            checkpoint.CheckFinite(policy.Arena);
            if (draftFolder is not null)
            {
                using var draftCheckpoint = Checkpoint.Load(draftFolder);
                Checkpoint.CheckCompatibleDraft(checkpoint, draftCheckpoint);
                draft = TransformerWeights.FromCheckpoint(draftCheckpoint);
                draftCheckpoint.CheckFinite(draft.Arena);
            }
            return new GenerationModels(policyFolder, draftFolder, checkpoint, policy, draft);
        }
        catch
        {
            draft?.Dispose();
            policy?.Dispose();
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>A policy model and, with a draft, a draft model on <paramref name="backend"/> (own KV caches and sessions over these weights).</summary>
    public ModelPair Open(ComputeBackend backend, TransformerOptions runtime)
    {
        var policy = new TransformerModel(Policy, backend, runtime);
        try { return new ModelPair(policy, Draft is null ? null : new TransformerModel(Draft, backend, runtime)); }
        catch
        {
            policy.Dispose();
            throw;
        }
    }

    /// <summary>The models of a cluster's instances over these weights, each on its own device queue of <paramref name="device"/>.</summary>
    public InstanceModels Instances(string device, TransformerOptions runtime) => new(device, Policy, Draft, runtime);

    public void Dispose()
    {
        Draft?.Dispose();
        Policy.Dispose();
        Checkpoint.Dispose();
    }
}
