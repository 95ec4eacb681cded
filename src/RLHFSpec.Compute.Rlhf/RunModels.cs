using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// What a run builds over its <see cref="RunWeights"/>: the frozen reference, the compute backend, the generation
/// models and <see cref="Generator"/> (and, with several instances, each instance's models over the same weights), the
/// training graphs, gradients and AdamW of the policy, and the draft's distiller. Training updates the weights in
/// place; <see cref="RefreshGenerationWeights"/> then refreshes generation's copy. A build that fails part way
/// disposes what it built.
/// </summary>
internal sealed class RunModels : IDisposable
{
    public RunModels(RlhfConfig config, RunWeights weights, string referenceSource, OnnxSessionOptions session)
    {
        try
        {
            Reference = TransformerWeights.Load(referenceSource);
            Backend = Devices.Open(config.Device);
            var runtime = new TransformerOptions { KvMemoryBudgetBytes = (long)config.KvMemoryMiB << 20, Session = session, Dense = config.DenseKind };
            PolicyModel = new TransformerModel(weights.Policy, Backend, runtime);
            if (weights.Draft is not null) DraftModel = new TransformerModel(weights.Draft, Backend, runtime);
            Generator = new Generator(PolicyModel, config.Speculation.IsOff ? null : DraftModel,
                new GeneratorSettings { Strategy = config.Speculation, StopTokens = weights.Stops, MaxBatch = config.MaxBatch, CostProfilePath = config.CostProfile });
            if (config.Instances > 1)
            {
                // Instances share the cores: without a thread count each gets its share.
                var instanceSession = session with { IntraOpThreads = config.Threads > 0 ? config.Threads : Math.Max(1, Environment.ProcessorCount / config.Instances) };
                Instances = new InstanceModels(config.Device, weights.Policy, config.Speculation.IsOff ? null : weights.Draft, runtime with { Session = instanceSession });
            }
            PolicyGraphs = new PolicyGraphs(weights.Policy.Spec, session);
            Gradients = new TensorArena(weights.Policy.Spec.Tensors());
            Accumulator = new GradientAccumulator(Gradients);
            Optimizer = new AdamW(new AdamWOptions { Schedule = LearningRateSchedule.Constant(config.LearningRate), WeightDecay = 0, MaxGradNorm = config.MaxGradNorm });
            foreach (var name in weights.Policy.Arena.Names) Optimizer.Add(name, weights.Policy.Arena.Memory(name), Gradients.Memory(name), DecoderGraphSpec.Decays(name));
            if (weights.Draft is not null && config.DraftRefresh)
            {
                DraftGraphs = new PolicyGraphs(weights.Draft.Spec, session);
                Distiller = new DraftDistiller(weights.Draft.Spec, weights.Draft.Arena, RlhfTrainer.DistillationSession(session, config.Threads),
                    new AdamWOptions { Schedule = LearningRateSchedule.Constant(config.DraftLearningRate), WeightDecay = 0, MaxGradNorm = 1.0 });
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The frozen reference policy (the run's start).</summary>
    public TransformerWeights Reference { get; } = null!;
    public ComputeBackend Backend { get; } = null!;
    public TransformerModel PolicyModel { get; } = null!;
    public TransformerModel? DraftModel { get; }
    public Generator Generator { get; } = null!;

    /// <summary>With instances > 1: the cluster's models over the shared weights; else null.</summary>
    public InstanceModels? Instances { get; }

    /// <summary>The policy's training graphs (log-probs, logits, loss and gradients).</summary>
    public PolicyGraphs PolicyGraphs { get; } = null!;
    public TensorArena Gradients { get; } = null!;
    public AdamW Optimizer { get; } = null!;

    /// <summary>Sums a minibatch's micro-batch gradients into <see cref="Gradients"/>.</summary>
    public GradientAccumulator Accumulator { get; } = null!;

    /// <summary>The draft's logits graph and distiller when the draft is refreshed; else null.</summary>
    public PolicyGraphs? DraftGraphs { get; }
    public DraftDistiller? Distiller { get; }

    /// <summary>Generation's copy of the weights (the Vulkan dense executor's device buffers; free for the others).</summary>
    public void RefreshGenerationWeights()
    {
        PolicyModel.RefreshWeights();
        DraftModel?.RefreshWeights();
        Instances?.RefreshWeights();
    }

    public void Dispose()
    {
        Distiller?.Dispose();
        DraftGraphs?.Dispose();
        PolicyGraphs?.Dispose();
        Accumulator?.Dispose();
        Gradients?.Dispose();
        Instances?.Dispose();
        DraftModel?.Dispose();
        PolicyModel?.Dispose();
        Reference?.Dispose();
        Backend?.Dispose();
    }
}
