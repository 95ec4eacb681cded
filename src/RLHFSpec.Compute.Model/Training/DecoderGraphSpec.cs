namespace RLHFSpec.Compute.Model.Training;

/// <summary>
/// The dimensions and options of a Llama/Qwen2 decoder that <see cref="DecoderTrainingGraph"/> needs; a plain
/// mirror of the fields of Formats.ModelConfig (kept separate so the graph code does not depend on file formats:
/// map ModelConfig → spec in one place). Bias flags follow ModelConfig's HasQkvBias/HasOutputBias/HasMlpBias.
/// </summary>
public sealed record DecoderGraphSpec
{
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public double RmsEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public bool TiedEmbeddings { get; init; }
    public bool QkvBias { get; init; }
    public bool OutputBias { get; init; }
    public bool MlpBias { get; init; }

    public void Validate()
    {
        void Positive(int v, string name)
        {
            if (v <= 0) throw new ArgumentException($"decoder spec: {name} must be > 0, got {v}");
        }
        Positive(VocabSize, nameof(VocabSize));
        Positive(HiddenSize, nameof(HiddenSize));
        Positive(IntermediateSize, nameof(IntermediateSize));
        Positive(NumLayers, nameof(NumLayers));
        Positive(NumHeads, nameof(NumHeads));
        Positive(NumKvHeads, nameof(NumKvHeads));
        Positive(HeadDim, nameof(HeadDim));
        if (NumHeads % NumKvHeads != 0) throw new ArgumentException($"decoder spec: {NumHeads} heads are not a multiple of {NumKvHeads} kv heads");
        if (HeadDim % 2 != 0) throw new ArgumentException($"decoder spec: head dim {HeadDim} must be even for rotary embeddings");
        if (!(RmsEps > 0)) throw new ArgumentException($"decoder spec: RMS eps must be > 0, got {RmsEps}");
        if (!(RopeTheta > 0)) throw new ArgumentException($"decoder spec: rope theta must be > 0, got {RopeTheta}");
    }

    /// <summary>Weight tensors by Hugging Face name with torch shapes ([out, in] for linear weights), in layer order.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> Tensors()
    {
        long h = HiddenSize, i = IntermediateSize, v = VocabSize, q = NumHeads * HeadDim, kv = NumKvHeads * HeadDim;
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", new[] { v, h }) };
        for (int l = 0; l < NumLayers; l++)
        {
            string p = $"model.layers.{l}.";
            list.Add((p + "input_layernorm.weight", new[] { h }));
            list.Add((p + "self_attn.q_proj.weight", new[] { q, h }));
            list.Add((p + "self_attn.k_proj.weight", new[] { kv, h }));
            list.Add((p + "self_attn.v_proj.weight", new[] { kv, h }));
            list.Add((p + "self_attn.o_proj.weight", new[] { h, q }));
            if (QkvBias)
            {
                list.Add((p + "self_attn.q_proj.bias", new[] { q }));
                list.Add((p + "self_attn.k_proj.bias", new[] { kv }));
                list.Add((p + "self_attn.v_proj.bias", new[] { kv }));
            }
            if (OutputBias) list.Add((p + "self_attn.o_proj.bias", new[] { h }));
            list.Add((p + "post_attention_layernorm.weight", new[] { h }));
            list.Add((p + "mlp.gate_proj.weight", new[] { i, h }));
            list.Add((p + "mlp.up_proj.weight", new[] { i, h }));
            list.Add((p + "mlp.down_proj.weight", new[] { h, i }));
            if (MlpBias)
            {
                list.Add((p + "mlp.gate_proj.bias", new[] { i }));
                list.Add((p + "mlp.up_proj.bias", new[] { i }));
                list.Add((p + "mlp.down_proj.bias", new[] { h }));
            }
        }
        list.Add(("model.norm.weight", new[] { h }));
        if (!TiedEmbeddings) list.Add(("lm_head.weight", new[] { v, h }));
        return list;
    }

    /// <summary>Whether AdamW should decay this tensor: matrices yes; norms and biases no (common practice).</summary>
    public static bool Decays(string name) => !name.EndsWith(".bias", StringComparison.Ordinal) && !name.Contains("norm", StringComparison.Ordinal);
}
