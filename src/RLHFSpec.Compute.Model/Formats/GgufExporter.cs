using System.Globalization;
using System.Runtime.InteropServices;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>What <see cref="GgufExporter.Export"/> wrote.</summary>
public sealed record GgufExportSummary(string Path, string Architecture, string PreTokenizer, int Tensors, int VocabularySize, long Bytes, TensorDType DType);

/// <summary>
/// Exports a Llama or Qwen2 checkpoint (HF layout) to a GGUF v3 file that llama.cpp loads: tensors under llama.cpp's
/// names (token_embd, blk.N.attn_q …, output_norm, output — omitted when embeddings are tied, llama.cpp then reuses
/// token_embd), architecture <c>llama</c> with the q/k rows of each head permuted from Hugging Face's rotate-half
/// layout to ggml's interleaved-pair RoPE (as llama.cpp's own converter does), or <c>qwen2</c> (NeoX RoPE, no
/// permutation) with its q/k/v biases; hyperparameters as <c>{arch}.*</c> keys; the byte-level BPE tokenizer as
/// <c>tokenizer.ggml.*</c> (model gpt2, tokens, token types, merges, special ids, add_bos_token false as this project
/// never adds one, and the <c>pre</c> type whose regex is the tokenizer's own split regex). With F16 the 2-D weights are
/// stored as half floats and the 1-D ones (norms, biases) stay F32, as llama.cpp's converter does. The file is written
/// to a temporary name and renamed. Anything the export cannot represent faithfully is refused with an
/// <see cref="InvalidDataException"/> naming the file and the field.
/// </summary>
public static class GgufExporter
{
    // llama_token_type of tokenizer.ggml.token_type.
    private const int TokenNormal = 1, TokenControl = 3, TokenUnused = 5;

    // llama_ftype of general.file_type.
    private const uint FileTypeAllF32 = 0, FileTypeMostlyF16 = 1;

    /// <summary>The split regexes llama.cpp has a pre-tokenizer type for, and that type's name.</summary>
    private static readonly (string Pattern, string Pre)[] PreTokenizers =
    [
        (BpeModelData.Qwen2Pattern, "qwen2"),
        (BpeModelData.Gpt2Pattern, "gpt-2"),
        (TextTokenizer.Cl100kPattern, "llama-bpe"),
    ];

    public static GgufExportSummary Export(string modelFolder, string outPath, TensorDType dtype = TensorDType.F32)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelFolder);
        ArgumentException.ThrowIfNullOrEmpty(outPath);
        if (dtype is not (TensorDType.F32 or TensorDType.F16)) throw new ArgumentException($"--dtype: {dtype.ToTorchName()} is not supported (f32, f16)", nameof(dtype));
        using var checkpoint = Checkpoint.Load(modelFolder);
        var writer = Build(checkpoint, dtype, out string arch, out string pre, out int vocab);
        AtomicFile.Write(outPath, writer.WriteTo);
        return new GgufExportSummary(Path.GetFullPath(outPath), arch, pre, writer.TensorCount, vocab, new FileInfo(outPath).Length, dtype);
    }

    /// <summary>The GGUF content of a checkpoint (metadata and tensors, data read when written).</summary>
    public static GgufWriter Build(Checkpoint checkpoint, TensorDType dtype, out string arch, out string pre, out int vocabularySize)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        string configPath = Path.Combine(checkpoint.Folder, ModelConfig.FileName);
        if (c.IsSequenceClassifier) throw new InvalidDataException($"{configPath}: field 'architectures': a sequence classifier ({string.Join(", ", c.Architectures)}) has no LM head to export");
        if (c.HasRopeScaling) throw new InvalidDataException($"{configPath}: field 'rope_scaling': not supported by the GGUF export");
        if (c.UsesSlidingWindow) throw new InvalidDataException($"{configPath}: field 'use_sliding_window': not supported by the GGUF export");
        if (c.HasMlpBias) throw new InvalidDataException($"{configPath}: field 'mlp_bias': MLP biases are not supported by the GGUF export");
        arch = c.ModelType;
        pre = PreTokenizerOf(checkpoint);

        var w = new GgufWriter();
        w.Add("general.architecture", arch);
        w.Add("general.name", Path.GetFileName(Path.GetFullPath(checkpoint.Folder).TrimEnd(Path.DirectorySeparatorChar)));
        w.Add("general.file_type", dtype == TensorDType.F16 ? FileTypeMostlyF16 : FileTypeAllF32);
        w.Add($"{arch}.vocab_size", (uint)c.VocabSize);
        w.Add($"{arch}.context_length", (uint)c.MaxPositionEmbeddings);
        w.Add($"{arch}.embedding_length", (uint)c.HiddenSize);
        w.Add($"{arch}.block_count", (uint)c.NumHiddenLayers);
        w.Add($"{arch}.feed_forward_length", (uint)c.IntermediateSize);
        w.Add($"{arch}.attention.head_count", (uint)c.NumAttentionHeads);
        w.Add($"{arch}.attention.head_count_kv", (uint)c.NumKeyValueHeads);
        w.Add($"{arch}.attention.key_length", (uint)c.HeadDim);
        w.Add($"{arch}.attention.value_length", (uint)c.HeadDim);
        w.Add($"{arch}.rope.dimension_count", (uint)c.HeadDim);
        w.Add($"{arch}.rope.freq_base", (float)c.RopeTheta);
        w.Add($"{arch}.attention.layer_norm_rms_epsilon", (float)c.RmsNormEps);
        vocabularySize = AddTokenizer(w, checkpoint, pre);

        bool llama = arch == "llama";
        void Tensor(string hfName, string ggufName, int permuteHeads = 0)
        {
            var info = checkpoint.Weights.Get(hfName);
            bool half = dtype == TensorDType.F16 && info.Shape.Length >= 2;
            w.AddTensor(ggufName, info.Shape, half ? GgufWriter.TensorType.F16 : GgufWriter.TensorType.F32, stream =>
            {
                var t = checkpoint.ReadTensor(hfName);
                var data = permuteHeads > 0 ? PermuteRotaryRows(t.Data, t.Shape, permuteHeads) : t.Data;
                var bytes = new byte[data.Length * (half ? 2 : 4)];
                if (half) FloatCodec.Encode(data, TensorDType.F16, bytes);
                else MemoryMarshal.AsBytes(data.AsSpan()).CopyTo(bytes);
                stream.Write(bytes);
            });
        }

        Tensor("model.embed_tokens.weight", "token_embd.weight");
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.", b = $"blk.{l}.";
            Tensor(p + "input_layernorm.weight", b + "attn_norm.weight");
            Tensor(p + "self_attn.q_proj.weight", b + "attn_q.weight", llama ? c.NumAttentionHeads : 0);
            Tensor(p + "self_attn.k_proj.weight", b + "attn_k.weight", llama ? c.NumKeyValueHeads : 0);
            Tensor(p + "self_attn.v_proj.weight", b + "attn_v.weight");
            Tensor(p + "self_attn.o_proj.weight", b + "attn_output.weight");
            if (c.HasQkvBias)
            {
                Tensor(p + "self_attn.q_proj.bias", b + "attn_q.bias", llama ? c.NumAttentionHeads : 0);
                Tensor(p + "self_attn.k_proj.bias", b + "attn_k.bias", llama ? c.NumKeyValueHeads : 0);
                Tensor(p + "self_attn.v_proj.bias", b + "attn_v.bias");
            }
            if (c.HasOutputBias) Tensor(p + "self_attn.o_proj.bias", b + "attn_output.bias");
            Tensor(p + "post_attention_layernorm.weight", b + "ffn_norm.weight");
            Tensor(p + "mlp.gate_proj.weight", b + "ffn_gate.weight");
            Tensor(p + "mlp.up_proj.weight", b + "ffn_up.weight");
            Tensor(p + "mlp.down_proj.weight", b + "ffn_down.weight");
        }
        Tensor("model.norm.weight", "output_norm.weight");
        if (!c.TieWordEmbeddings) Tensor("lm_head.weight", "output.weight");
        return w;
    }

    /// <summary>
    /// Hugging Face's Llama q/k rows per head are [first halves of the rotated pairs; second halves] (rotate-half RoPE);
    /// ggml's Llama RoPE rotates adjacent pairs. Row (h, j·d/2 + i) moves to (h, 2i + j), for a weight [heads·d, in]
    /// or a bias [heads·d] — llama.cpp's convert_hf_to_gguf.py <c>permute</c>.
    /// </summary>
    public static float[] PermuteRotaryRows(float[] data, IReadOnlyList<int> shape, int heads)
    {
        int rows = shape[0], cols = shape.Count > 1 ? data.Length / rows : 1;
        if (rows % (2 * heads) != 0) throw new ArgumentException($"{rows} rows are not {heads} heads of an even size", nameof(shape));
        int d = rows / heads, half = d / 2;
        var result = new float[data.Length];
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < half; i++)
                    data.AsSpan((h * d + j * half + i) * cols, cols).CopyTo(result.AsSpan((h * d + 2 * i + j) * cols, cols));
        return result;
    }

    private static string PreTokenizerOf(Checkpoint checkpoint)
    {
        var tokenizer = checkpoint.Tokenizer;
        string file = tokenizer.SourceFiles.Count > 0 ? tokenizer.SourceFiles[0] : checkpoint.Folder;
        if (tokenizer.Bpe is not { } bpe)
            throw new InvalidDataException($"{file}: a {tokenizer.Kind} tokenizer is not supported by the GGUF export (byte-level BPE only)");
        foreach (var (pattern, pre) in PreTokenizers)
            if (bpe.SplitPattern == pattern) return pre;
        throw new InvalidDataException($"{file}: field 'pre_tokenizer': split regex '{bpe.SplitPattern}' has no llama.cpp pre-tokenizer type (known: GPT-2, Qwen2, Llama 3 regexes)");
    }

    /// <summary>Writes tokenizer.ggml.*; returns the number of token entries (the model's vocab_size).</summary>
    private static int AddTokenizer(GgufWriter w, Checkpoint checkpoint, string pre)
    {
        var tokenizer = checkpoint.Tokenizer;
        var bpe = tokenizer.Bpe!;
        int n = checkpoint.Config.VocabSize;
        var tokens = new string?[n];
        var types = new int[n];
        foreach (var (token, id) in bpe.Vocabulary) { tokens[id] = token; types[id] = TokenNormal; }
        foreach (var (token, id) in bpe.SpecialTokens) { tokens[id] = token; types[id] = TokenControl; }
        for (int i = 0; i < n; i++)
            if (tokens[i] is null) { tokens[i] = string.Create(CultureInfo.InvariantCulture, $"[PAD{i}]"); types[i] = TokenUnused; }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tokens)
            if (!seen.Add(t!)) throw new InvalidDataException($"{tokenizer.SourceFiles.FirstOrDefault() ?? checkpoint.Folder}: token '{t}' appears under two ids");
        w.Add("tokenizer.ggml.model", "gpt2");
        w.Add("tokenizer.ggml.pre", pre);
        w.Add("tokenizer.ggml.tokens", tokens!);
        w.Add("tokenizer.ggml.token_type", types);
        w.Add("tokenizer.ggml.merges", bpe.Merges.Select(m => m.Left + " " + m.Right).ToArray());
        if (tokenizer.BosId is { } bos) w.Add("tokenizer.ggml.bos_token_id", (uint)bos);
        if (tokenizer.EosId is { } eos) w.Add("tokenizer.ggml.eos_token_id", (uint)eos);
        if (tokenizer.PadId is { } pad) w.Add("tokenizer.ggml.padding_token_id", (uint)pad);
        w.Add("tokenizer.ggml.add_bos_token", false);
        w.Add("tokenizer.ggml.add_eos_token", false);
        return n;
    }
}
