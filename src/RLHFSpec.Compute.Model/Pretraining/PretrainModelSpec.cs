using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// One model the pretrainer trains: its folder name under the output folder, its Hugging Face config and its
/// training budget. Batches hold about <see cref="TokensPerBatch"/> tokens (more short samples, fewer long ones).
/// </summary>
public sealed record PretrainModelSpec
{
    public required string Name { get; init; }
    public required ModelConfig Config { get; init; }
    public required int Steps { get; init; }
    public double PeakLearningRate { get; init; } = 3e-3;
    public double MinLearningRate { get; init; } = 3e-4;
    public int WarmupSteps { get; init; } = 30;
    public int TokensPerBatch { get; init; } = 2048;

    /// <summary>
    /// When set, training starts from a function-preserving growth of a trained model (<see cref="ModelGrowth"/>)
    /// instead of random weights: fine-tuning. The grown shape must equal <see cref="Config"/>'s.
    /// </summary>
    public GrowthStart? GrowFrom { get; init; }

    /// <summary>
    /// When set, the name of a model of the same set, trained before this one (its folder is a sibling in the output
    /// folder): this model learns the teacher's next-token distributions on the task's data stream (forward KL,
    /// <see cref="DecoderTrainingGraph.DistillationLossGraph"/>) instead of the reference tokens. Drafts distilled from
    /// the policy learn what the policy would say, mistakes included, which is what speculative sampling accepts.
    /// </summary>
    public string? DistillFrom { get; init; }

    /// <summary>The trained model folder to grow and how (factors; spread of the symmetry-breaking split).</summary>
    public sealed record GrowthStart(string SourceFolder, ModelGrowth.GrowthFactors Factors, double SplitNoise = 0.5)
    {
        public string Describe() =>
            $"grown from {SourceFolder} (width x{Factors.Width}, intermediate x{Factors.Intermediate}, layers {Factors.Layers}, split noise {SplitNoise:0.###})";
    }

    /// <summary>How the model starts and what it learns, for <c>pretrain.json</c>; null for reference tokens from random weights.</summary>
    public string? DescribeSource() => (GrowFrom, DistillFrom) switch
    {
        (null, null) => null,
        (null, { } teacher) => $"random weights, distilled from {teacher} on the task",
        ({ } grow, null) => grow.Describe() + ", then fine-tuned on the task",
        ({ } grow, { } teacher) => grow.Describe() + $", then distilled from {teacher} on the task",
    };

    /// <summary>The graph spec of <see cref="Config"/> (the one place a ModelConfig becomes a DecoderGraphSpec here).</summary>
    public DecoderGraphSpec GraphSpec => new()
    {
        VocabSize = Config.VocabSize,
        HiddenSize = Config.HiddenSize,
        IntermediateSize = Config.IntermediateSize,
        NumLayers = Config.NumHiddenLayers,
        NumHeads = Config.NumAttentionHeads,
        NumKvHeads = Config.NumKeyValueHeads,
        HeadDim = Config.HeadDim,
        RmsEps = Config.RmsNormEps,
        RopeTheta = Config.RopeTheta,
        TiedEmbeddings = Config.TieWordEmbeddings,
        QkvBias = Config.HasQkvBias,
        OutputBias = Config.HasOutputBias,
        MlpBias = Config.HasMlpBias,
    };

    /// <summary>Number of weights.</summary>
    public long ParameterCount => GraphSpec.Tensors().Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Name) || Name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || Name is "." or "..")
            throw new ArgumentException($"pretrain model name '{Name}' is not a folder name");
        if (Steps < 1) throw new ArgumentException($"pretrain model {Name}: steps must be >= 1, got {Steps}");
        if (TokensPerBatch < 16) throw new ArgumentException($"pretrain model {Name}: tokens per batch must be >= 16, got {TokensPerBatch}");
        if (DistillFrom is not null && (string.IsNullOrWhiteSpace(DistillFrom) || DistillFrom == Name))
            throw new ArgumentException($"pretrain model {Name}: distils from '{DistillFrom}', not another model of the set");
        if (WarmupSteps < 0) throw new ArgumentException($"pretrain model {Name}: warmup steps must be >= 0, got {WarmupSteps}");
        Config.Validate();
        GraphSpec.Validate();
        _ = new LearningRateSchedule(PeakLearningRate, Math.Min(WarmupSteps, Steps), Steps, MinLearningRate);
    }

    /// <summary>
    /// A Llama-family decoder config for the arithmetic tokenizer: tied embeddings, no biases, EOS and pad ids from
    /// the tokenizer.
    /// </summary>
    public static ModelConfig LlamaConfig(TextTokenizer tokenizer, int hidden, int layers, int heads, int kvHeads,
        int intermediate, int maxPositions = 1024) => new()
        {
            ModelType = "llama",
            VocabSize = tokenizer.VocabSize,
            HiddenSize = hidden,
            IntermediateSize = intermediate,
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            MaxPositionEmbeddings = maxPositions,
            TieWordEmbeddings = true,
            RmsNormEps = 1e-6,
            RopeTheta = 10000,
            EosTokenIds = tokenizer.EosId is { } eos ? new[] { eos } : Array.Empty<int>(),
            PadTokenId = tokenizer.PadId,
        };
}
