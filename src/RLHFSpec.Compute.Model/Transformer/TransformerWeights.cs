using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>
/// The one copy of a decoder's weights: fp32 tensors by Hugging Face name in one pinned <see cref="TensorArena"/>,
/// which the generation graphs, the training graphs and the optimizer all read and write in place (an AdamW step
/// is seen by the next forward, with no copy). Loads from and saves to HF checkpoints.
/// </summary>
public sealed class TransformerWeights : IDisposable
{
    public TransformerWeights(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (config.HasRopeScaling) throw new ArgumentException("config: rope_scaling is not supported by the transformer runtime", nameof(config));
        if (config.UsesSlidingWindow) throw new ArgumentException("config: use_sliding_window is not supported by the transformer runtime", nameof(config));
        if (config.HiddenAct != "silu") throw new ArgumentException($"config: hidden_act '{config.HiddenAct}' is not supported (only silu)", nameof(config));
        if (config.IsSequenceClassifier)
            throw new ArgumentException($"config: architectures {string.Join(", ", config.Architectures)} is a scalar-head (value/reward) model, not a language model", nameof(config));
        Config = config;
        Spec = SpecOf(config);
        Arena = new TensorArena(Spec.Tensors());
    }

    public ModelConfig Config { get; }
    public DecoderGraphSpec Spec { get; }
    public TensorArena Arena { get; }

    /// <summary>Number of parameters (tied embeddings counted once).</summary>
    public long ParameterCount => Arena.Length;

    /// <summary>The graph spec of a config: the one place ModelConfig maps onto <see cref="DecoderGraphSpec"/>.</summary>
    public static DecoderGraphSpec SpecOf(ModelConfig config) => new()
    {
        VocabSize = config.VocabSize,
        HiddenSize = config.HiddenSize,
        IntermediateSize = config.IntermediateSize,
        NumLayers = config.NumHiddenLayers,
        NumHeads = config.NumAttentionHeads,
        NumKvHeads = config.NumKeyValueHeads,
        HeadDim = config.HeadDim,
        RmsEps = config.RmsNormEps,
        RopeTheta = config.RopeTheta,
        TiedEmbeddings = config.TieWordEmbeddings,
        QkvBias = config.HasQkvBias,
        OutputBias = config.HasOutputBias,
        MlpBias = config.HasMlpBias,
    };

    /// <summary>Reads every tensor of <paramref name="checkpoint"/> (F32, F16 or BF16 on disk) into fp32.</summary>
    public static TransformerWeights FromCheckpoint(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var weights = new TransformerWeights(checkpoint.Config);
        try
        {
            foreach (var name in weights.Arena.Names)
            {
                if (!checkpoint.Weights.Contains(name))
                    throw new InvalidDataException($"{checkpoint.Folder}: tensor '{name}' is missing from the safetensors files");
                var data = checkpoint.Weights.ReadFloats(name);
                var target = weights.Arena.Span(name);
                if (data.Length != target.Length)
                    throw new InvalidDataException($"{checkpoint.Folder}: tensor '{name}' has {data.Length} elements, the config needs {target.Length}");
                data.CopyTo(target);
            }
            return weights;
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>Loads the weights of the HF checkpoint folder <paramref name="folder"/>.</summary>
    public static TransformerWeights Load(string folder)
    {
        using var checkpoint = Checkpoint.Load(folder);
        return FromCheckpoint(checkpoint);
    }

    /// <summary>
    /// Random initialisation (seeded): matrices and embeddings ~ N(0, <paramref name="std"/>²), biases 0, norm
    /// weights 1 — the usual initialisation of Llama-family models, for training from scratch and for tests.
    /// </summary>
    public static TransformerWeights Random(ModelConfig config, int seed, double std = 0.02)
    {
        var weights = new TransformerWeights(config);
        var random = new Random(seed);
        foreach (var name in weights.Arena.Names)
        {
            var span = weights.Arena.Span(name);
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) span.Fill(1f);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) span.Clear();
            else
                for (int i = 0; i < span.Length; i++)
                {
                    // Box–Muller
                    double u1 = 1 - random.NextDouble(), u2 = random.NextDouble();
                    span[i] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
                }
        }
        return weights;
    }

    /// <summary>Copies of every tensor, HF names and shapes, for <see cref="Checkpoint.Save"/>.</summary>
    public Dictionary<string, HostTensor> ToHostTensors()
    {
        var tensors = new Dictionary<string, HostTensor>();
        foreach (var name in Arena.Names)
            tensors[name] = new HostTensor(Arena.Shape(name).Select(d => checked((int)d)).ToArray(), Arena.Span(name).ToArray());
        return tensors;
    }

    public void Dispose() => Arena.Dispose();
}
