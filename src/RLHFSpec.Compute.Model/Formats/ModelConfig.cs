using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// The Hugging Face <c>config.json</c> of a Llama- or Qwen2-family decoder-only transformer: the fields those
/// families use, with their transformers defaults where a field may be omitted. Fields this project does not
/// interpret (rope_scaling, sliding_window, transformers_version, …) are kept in <see cref="ExtraFields"/> and written
/// back on save, so a config survives a load/save round trip for other tools.
/// Semantics of biases follow transformers: Qwen2 always has q/k/v projection biases (and no o_proj bias); Llama has
/// q/k/v/o biases only when <c>attention_bias</c> is true, and gate/up/down biases when <c>mlp_bias</c> is true.
/// </summary>
public sealed record ModelConfig
{
    public const string FileName = "config.json";

    /// <summary>"llama" or "qwen2".</summary>
    public required string ModelType { get; init; }

    /// <summary>Model classes, e.g. ["LlamaForCausalLM"]; defaults to the family's causal-LM class.</summary>
    public IReadOnlyList<string> Architectures { get; init; } = Array.Empty<string>();

    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }

    /// <summary>Grouped-query attention: KV heads; 0 in the initialiser means "= attention heads".</summary>
    public int NumKeyValueHeads
    {
        get => _numKeyValueHeads == 0 ? NumAttentionHeads : _numKeyValueHeads;
        init => _numKeyValueHeads = value;
    }

    /// <summary>Per-head size; 0 in the initialiser means hidden / heads (the file omits it then).</summary>
    public int HeadDim
    {
        get => _headDim == 0 ? (NumAttentionHeads > 0 ? HiddenSize / NumAttentionHeads : 0) : _headDim;
        init => _headDim = value;
    }

    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public int MaxPositionEmbeddings { get; init; } = 2048;
    public bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }

    /// <summary>End-of-sequence ids: config.json has an int or a list.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = Array.Empty<int>();

    public int? PadTokenId { get; init; }

    /// <summary>The stored weights' dtype (torch_dtype); null when the file does not say.</summary>
    public TensorDType? TorchDtype { get; init; }

    /// <summary>Llama's attention_bias (q/k/v/o biases). Qwen2 ignores it: its q/k/v biases are always there.</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Llama's mlp_bias (gate/up/down biases).</summary>
    public bool MlpBias { get; init; }

    /// <summary>Activation of the gated MLP; only "silu" (SwiGLU) is supported.</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Fields not interpreted here, kept verbatim for saving.</summary>
    public IReadOnlyDictionary<string, JsonElement> ExtraFields { get; init; } = new Dictionary<string, JsonElement>();

    private readonly int _numKeyValueHeads;
    private readonly int _headDim;

    /// <summary>Whether q/k/v projections carry biases (Qwen2 always; Llama with attention_bias).</summary>
    public bool HasQkvBias => ModelType == "qwen2" || AttentionBias;

    /// <summary>Whether o_proj carries a bias (Llama with attention_bias only).</summary>
    public bool HasOutputBias => ModelType == "llama" && AttentionBias;

    /// <summary>Whether the MLP projections carry biases.</summary>
    public bool HasMlpBias => ModelType == "llama" && MlpBias;

    /// <summary>Whether config.json asks for rope_scaling (Llama 3.1+ "llama3", "linear", "dynamic", YaRN …). It is kept
    /// in <see cref="ExtraFields"/> untouched; a forward pass that applies plain RoPE must refuse such a model.</summary>
    public bool HasRopeScaling => ExtraFields.TryGetValue("rope_scaling", out var v) && v.ValueKind != JsonValueKind.Null;

    /// <summary>Whether Qwen2's sliding-window attention is switched on (use_sliding_window: true); off in released
    /// Qwen2/2.5 checkpoints. Kept in <see cref="ExtraFields"/>; full attention is wrong for a model that sets it.</summary>
    public bool UsesSlidingWindow => ExtraFields.TryGetValue("use_sliding_window", out var v) && v.ValueKind == JsonValueKind.True;

    /// <summary>The causal-LM class name for the family ("LlamaForCausalLM", "Qwen2ForCausalLM").</summary>
    public string DefaultArchitecture => ModelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";

    /// <summary>The name of a sequence-classification head's weight (transformers' *ForSequenceClassification).</summary>
    public const string ScoreWeight = "score.weight";

    /// <summary>
    /// Whether this is a scalar/classification-head model (architectures name a *ForSequenceClassification class):
    /// the decoder trunk and final norm, then <see cref="ScoreWeight"/> [num_labels, hidden] instead of lm_head.
    /// Value models (PPO's critic) and reward models are such models with one label.
    /// </summary>
    public bool IsSequenceClassifier => Architectures.Any(a => a.EndsWith("ForSequenceClassification", StringComparison.Ordinal));

    /// <summary>Rows of the score head: config.json's num_labels, else the size of id2label, else transformers' default 2.</summary>
    public int NumLabels =>
        ExtraFields.TryGetValue("num_labels", out var n) && n.ValueKind == JsonValueKind.Number && n.TryGetInt32(out int labels) ? labels
        : ExtraFields.TryGetValue("id2label", out var map) && map.ValueKind == JsonValueKind.Object ? map.EnumerateObject().Count()
        : 2;

    /// <summary>
    /// This config as a one-label sequence classifier of the same trunk ("LlamaForSequenceClassification" or
    /// "Qwen2ForSequenceClassification", num_labels 1): the config a value or reward model is saved with.
    /// </summary>
    public ModelConfig AsScalarHead()
    {
        var extras = ExtraFields.Where(kv => kv.Key is not ("id2label" or "label2id")).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        extras["num_labels"] = JsonDocument.Parse("1").RootElement.Clone();
        return this with
        {
            Architectures = new[] { ModelType == "qwen2" ? "Qwen2ForSequenceClassification" : "LlamaForSequenceClassification" },
            ExtraFields = extras,
        };
    }

    /// <summary>Checks the values; ArgumentException naming the field (for configs built in code).</summary>
    public void Validate()
    {
        if (FindProblem() is { } p) throw new ArgumentException($"{FileName}: field '{p.Field}': {p.Message}");
    }

    /// <summary>Loads and validates a config.json; InvalidDataException "PATH: field 'NAME': …" on bad content.</summary>
    public static ModelConfig Load(string path) => ModelConfigJson.Load(path);

    /// <summary>Validates and writes config.json (temporary file + rename).</summary>
    public void Save(string path)
    {
        Validate();
        ModelConfigJson.Save(this, path);
    }

    /// <summary>
    /// The tensors a checkpoint of this config holds, with Hugging Face names and shapes ([out, in] for linear
    /// weights, as torch stores them), in layer order. lm_head.weight only when embeddings are untied; a
    /// <see cref="IsSequenceClassifier"/> model has score.weight [num_labels, hidden] instead.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, int[]>> ExpectedTensors()
    {
        int h = HiddenSize, i = IntermediateSize, v = VocabSize;
        int q = NumAttentionHeads * HeadDim, kv = NumKeyValueHeads * HeadDim;
        var list = new List<KeyValuePair<string, int[]>> { new("model.embed_tokens.weight", new[] { v, h }) };
        for (int l = 0; l < NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            list.Add(new(p + "input_layernorm.weight", new[] { h }));
            list.Add(new(p + "self_attn.q_proj.weight", new[] { q, h }));
            list.Add(new(p + "self_attn.k_proj.weight", new[] { kv, h }));
            list.Add(new(p + "self_attn.v_proj.weight", new[] { kv, h }));
            list.Add(new(p + "self_attn.o_proj.weight", new[] { h, q }));
            if (HasQkvBias)
            {
                list.Add(new(p + "self_attn.q_proj.bias", new[] { q }));
                list.Add(new(p + "self_attn.k_proj.bias", new[] { kv }));
                list.Add(new(p + "self_attn.v_proj.bias", new[] { kv }));
            }
            if (HasOutputBias) list.Add(new(p + "self_attn.o_proj.bias", new[] { h }));
            list.Add(new(p + "post_attention_layernorm.weight", new[] { h }));
            list.Add(new(p + "mlp.gate_proj.weight", new[] { i, h }));
            list.Add(new(p + "mlp.up_proj.weight", new[] { i, h }));
            list.Add(new(p + "mlp.down_proj.weight", new[] { h, i }));
            if (HasMlpBias)
            {
                list.Add(new(p + "mlp.gate_proj.bias", new[] { i }));
                list.Add(new(p + "mlp.up_proj.bias", new[] { i }));
                list.Add(new(p + "mlp.down_proj.bias", new[] { h }));
            }
        }
        list.Add(new("model.norm.weight", new[] { h }));
        if (IsSequenceClassifier) list.Add(new(ScoreWeight, new[] { NumLabels, h }));
        else if (!TieWordEmbeddings) list.Add(new("lm_head.weight", new[] { v, h }));
        return list;
    }

    /// <summary>
    /// Checks weights against <see cref="ExpectedTensors"/>: every tensor present, with the expected shape, and a
    /// floating dtype equal to torch_dtype when the config names one. Extra tensors are allowed (transformers ignores
    /// them too, e.g. an lm_head.weight saved alongside tied embeddings). InvalidDataException naming the weights
    /// file and the tensor; <paramref name="configPath"/> names the config in the message.
    /// </summary>
    public void CheckTensors(SafetensorsCollection weights, string configPath = FileName)
    {
        ArgumentNullException.ThrowIfNull(weights);
        foreach (var (name, shape) in ExpectedTensors())
        {
            var info = weights.Get(name);  // throws "FILE: tensor 'NAME' is missing"
            var file = weights.FileOf(name).FilePath;
            if (!info.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"{file}: tensor '{name}' has shape {info.ShapeText} but {configPath} implies {TensorInfo.FormatShape(shape)}");
            if (info.DType is not (TensorDType.F32 or TensorDType.F16 or TensorDType.BF16))
                throw new InvalidDataException($"{file}: tensor '{name}' has dtype {info.DType.ToHeaderName()}, not a float type (F32, F16, BF16)");
            if (TorchDtype is { } expected && info.DType != expected)
                throw new InvalidDataException($"{file}: tensor '{name}' has dtype {info.DType.ToHeaderName()} but {configPath} says torch_dtype {expected.ToTorchName()}");
        }
        // Other tensors may ride along (e.g. a rotary cache some exporters save), but never a layer the config does
        // not have: that would silently run a truncated model.
        foreach (var name in weights.Names)
        {
            const string Prefix = "model.layers.";
            if (!name.StartsWith(Prefix, StringComparison.Ordinal)) continue;
            int dot = name.IndexOf('.', Prefix.Length);
            if (dot < 0 || !int.TryParse(name.AsSpan(Prefix.Length, dot - Prefix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int layer)) continue;
            if (layer >= NumHiddenLayers)
                throw new InvalidDataException($"{weights.FileOf(name).FilePath}: tensor '{name}' is of layer {layer}, but {configPath} field 'num_hidden_layers' is {NumHiddenLayers} " +
                    $"(layers 0..{NumHiddenLayers - 1}); the config and the weights disagree");
        }
    }

    /// <summary>The first invalid field and why, or null.</summary>
    internal (string Field, string Message)? FindProblem()
    {
        if (ModelType is not ("llama" or "qwen2")) return ("model_type", $"'{ModelType}' is not supported (llama, qwen2)");
        if (VocabSize <= 0) return ("vocab_size", $"must be positive, got {VocabSize}");
        if (HiddenSize <= 0) return ("hidden_size", $"must be positive, got {HiddenSize}");
        if (IntermediateSize <= 0) return ("intermediate_size", $"must be positive, got {IntermediateSize}");
        if (NumHiddenLayers <= 0) return ("num_hidden_layers", $"must be positive, got {NumHiddenLayers}");
        if (NumAttentionHeads <= 0) return ("num_attention_heads", $"must be positive, got {NumAttentionHeads}");
        if (_numKeyValueHeads < 0) return ("num_key_value_heads", $"must be positive, got {_numKeyValueHeads}");
        if (_headDim < 0) return ("head_dim", $"must be positive, got {_headDim}");
        if (_headDim == 0 && HiddenSize % NumAttentionHeads != 0)
            return ("num_attention_heads", $"{NumAttentionHeads} heads do not divide hidden_size {HiddenSize}");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            return ("num_key_value_heads", $"{NumKeyValueHeads} KV heads do not divide num_attention_heads {NumAttentionHeads}");
        if (HeadDim % 2 != 0) return ("head_dim", $"{HeadDim} is odd; rotary embedding rotates pairs");
        if (!(RmsNormEps > 0) || double.IsInfinity(RmsNormEps)) return ("rms_norm_eps", $"must be positive and finite, got {RmsNormEps}");
        if (!(RopeTheta > 0) || double.IsInfinity(RopeTheta)) return ("rope_theta", $"must be positive and finite, got {RopeTheta}");
        if (MaxPositionEmbeddings <= 0) return ("max_position_embeddings", $"must be positive, got {MaxPositionEmbeddings}");
        if (HiddenAct != "silu") return ("hidden_act", $"'{HiddenAct}' is not supported (silu)");
        if (BosTokenId is { } bos && (bos < 0 || bos >= VocabSize)) return ("bos_token_id", $"{bos} is outside the vocabulary (size {VocabSize})");
        foreach (var eos in EosTokenIds)
            if (eos < 0 || eos >= VocabSize) return ("eos_token_id", $"{eos} is outside the vocabulary (size {VocabSize})");
        if (PadTokenId is { } pad && (pad < 0 || pad >= VocabSize)) return ("pad_token_id", $"{pad} is outside the vocabulary (size {VocabSize})");
        if (TorchDtype is { } dt && !dt.IsWritable()) return ("torch_dtype", $"'{dt.ToTorchName()}' is not a supported weight dtype");
        if (IsSequenceClassifier && NumLabels < 1) return ("num_labels", $"must be positive, got {NumLabels}");
        return null;
    }
}
