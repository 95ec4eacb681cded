using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The generation stage: the policy writes <c>samples_per_prompt</c> responses to each prompt through the speculative
/// <see cref="Generator"/>, on one instance or, with several, on the cluster (with sample reallocation when configured).
/// </summary>
/// <param name="instances">With instances > 1, the cluster's models; else null.</param>
internal sealed class GenerationStage(RlhfConfig config, TextTokenizer tokenizer, Generator generator, InstanceModels? instances)
{
    /// <summary>The iteration's record: its prompts and their responses (seeded by the run's seed and the iteration).</summary>
    public IterationBatch Run(int iteration, string[] prompts, IRlhfObserver? observer)
    {
        var promptIds = prompts.Select(p => tokenizer.Encode(p)).ToArray();
        var requests = GenerationRequests.For(promptIds, config.SamplesPerPrompt, config.MaxNewTokens, (float)config.Temperature, (float)config.TopP,
            seed: (ulong)(uint)config.Seed * 1_000_003UL + (ulong)iteration, firstId: (long)iteration * 10_000_000L);
        observer?.StageStarted(iteration, "generation", requests.Length);
        var outcome = instances is null
            ? generator.Run(requests, i => observer?.StageAdvanced(i.Finished.Count))
            : generator.RunCluster(requests, config.Instances, instances.Get, new ClusterOptions { Reallocate = config.Reallocate });
        observer?.StageAdvanced(outcome.Results.Count);
        return new IterationBatch(iteration, prompts, outcome);
    }
}
