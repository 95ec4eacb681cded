using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Rlhf;

/// <summary>
/// A small critic for value-model tests: a 1-layer Llama of random weights saved as a policy checkpoint with the small
/// test tokenizer, loaded as a <see cref="ValueModel"/> (one intra-op thread), its score head zero or drawn from a
/// given random stream (uniform in [−0.5, 0.5), in tensor order).
/// </summary>
internal sealed class TestCritic : IDisposable
{
    private readonly FormatsTestFolder _folder = new();
    private readonly Checkpoint _checkpoint;

    public TestCritic(int weightSeed, Random? scoreHead = null)
    {
        var tokenizer = TokenizerTests.TrainSmall();
        Config = Transformer.TransformerTestModels.Config("llama", vocab: tokenizer.VocabSize + 3, layers: 1);
        using (var policy = Transformer.TransformerTestModels.Weights(Config, weightSeed))
            Checkpoint.Save(_folder.File("policy"), Config, policy.ToHostTensors(), tokenizer);
        _checkpoint = Checkpoint.Load(_folder.File("policy"));
        Critic = ValueModel.Load(_checkpoint, new OnnxSessionOptions { IntraOpThreads = 1 });
        if (scoreHead is not null)
            foreach (ref float w in Critic.Weights.Span(ValueModelGraph.ScoreWeight)) w = (float)(scoreHead.NextDouble() - 0.5);
    }

    public ModelConfig Config { get; }
    public ValueModel Critic { get; }

    public void Dispose()
    {
        Critic.Dispose();
        _checkpoint.Dispose();
        _folder.Dispose();
    }
}
