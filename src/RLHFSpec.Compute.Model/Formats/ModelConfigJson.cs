using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>Reads and writes <see cref="ModelConfig"/> as config.json. Parsing is by hand over JsonDocument so a
/// wrong type or value is reported as "PATH: field 'NAME': …" rather than a serializer's path expression.</summary>
internal static class ModelConfigJson
{
    /// <summary>Fields read into typed properties; everything else goes to ExtraFields.</summary>
    private static readonly HashSet<string> Known = new(StringComparer.Ordinal)
    {
        "model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
        "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
        "torch_dtype", "dtype", "attention_bias", "mlp_bias", "hidden_act",
    };

    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException(Directory.Exists(path) ? $"{path}: is a folder, not a model config file" : $"{path}: model config not found", path);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, AllowDuplicateProperties = false });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: JSON {root.ValueKind}, not an object");
            var reader = new FieldReader(path, root);
            string modelType = reader.RequiredString("model_type");
            var extras = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
            foreach (var p in root.EnumerateObject())
                if (!Known.Contains(p.Name)) extras[p.Name] = p.Value.Clone();
            string? dtypeName = reader.OptionalString("torch_dtype") ?? reader.OptionalString("dtype");
            TensorDType? dtype = null;
            if (dtypeName is not null)
            {
                if (!TensorDTypes.TryParseTorchName(dtypeName, out var parsed))
                    throw new InvalidDataException($"{path}: field 'torch_dtype': '{dtypeName}' is not supported (float32, float16, bfloat16)");
                dtype = parsed;
            }
            var config = new ModelConfig
            {
                ModelType = modelType,
                Architectures = reader.OptionalStringList("architectures") ?? Array.Empty<string>(),
                VocabSize = reader.RequiredInt("vocab_size"),
                HiddenSize = reader.RequiredInt("hidden_size"),
                IntermediateSize = reader.RequiredInt("intermediate_size"),
                NumHiddenLayers = reader.RequiredInt("num_hidden_layers"),
                NumAttentionHeads = reader.RequiredInt("num_attention_heads"),
                NumKeyValueHeads = reader.OptionalInt("num_key_value_heads") ?? 0,
                HeadDim = reader.OptionalInt("head_dim") ?? 0,
                RmsNormEps = reader.OptionalDouble("rms_norm_eps") ?? 1e-6,
                RopeTheta = reader.OptionalDouble("rope_theta") ?? 10000.0,
                MaxPositionEmbeddings = reader.OptionalInt("max_position_embeddings") ?? (modelType == "qwen2" ? 32768 : 2048),
                TieWordEmbeddings = reader.OptionalBool("tie_word_embeddings") ?? false,
                BosTokenId = reader.OptionalInt("bos_token_id"),
                EosTokenIds = reader.OptionalIntOrList("eos_token_id") ?? Array.Empty<int>(),
                PadTokenId = reader.OptionalInt("pad_token_id"),
                TorchDtype = dtype,
                AttentionBias = reader.OptionalBool("attention_bias") ?? false,
                MlpBias = reader.OptionalBool("mlp_bias") ?? false,
                HiddenAct = reader.OptionalString("hidden_act") ?? "silu",
                ExtraFields = extras,
            };
            if (config.FindProblem() is { } problem)
                throw new InvalidDataException($"{path}: field '{problem.Field}': {problem.Message}");
            return config;
        }
    }

    public static void Save(ModelConfig c, string path)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            foreach (var a in c.Architectures.Count > 0 ? c.Architectures : new[] { c.DefaultArchitecture }) json.WriteStringValue(a);
            json.WriteEndArray();
            // Written even for qwen2 (which ignores it) so every tool sees the same value.
            json.WriteBoolean("attention_bias", c.AttentionBias);
            if (c.BosTokenId is { } bos) json.WriteNumber("bos_token_id", bos);
            if (c.EosTokenIds.Count == 1) json.WriteNumber("eos_token_id", c.EosTokenIds[0]);
            else if (c.EosTokenIds.Count > 1)
            {
                json.WriteStartArray("eos_token_id");
                foreach (var e in c.EosTokenIds) json.WriteNumberValue(e);
                json.WriteEndArray();
            }
            json.WriteNumber("head_dim", c.HeadDim);
            json.WriteString("hidden_act", c.HiddenAct);
            json.WriteNumber("hidden_size", c.HiddenSize);
            json.WriteNumber("intermediate_size", c.IntermediateSize);
            json.WriteNumber("max_position_embeddings", c.MaxPositionEmbeddings);
            if (c.ModelType == "llama") json.WriteBoolean("mlp_bias", c.MlpBias);
            json.WriteString("model_type", c.ModelType);
            json.WriteNumber("num_attention_heads", c.NumAttentionHeads);
            json.WriteNumber("num_hidden_layers", c.NumHiddenLayers);
            json.WriteNumber("num_key_value_heads", c.NumKeyValueHeads);
            if (c.PadTokenId is { } pad) json.WriteNumber("pad_token_id", pad);
            json.WriteNumber("rms_norm_eps", c.RmsNormEps);
            json.WriteNumber("rope_theta", c.RopeTheta);
            json.WriteBoolean("tie_word_embeddings", c.TieWordEmbeddings);
            if (c.TorchDtype is { } dt) json.WriteString("torch_dtype", dt.ToTorchName());
            json.WriteNumber("vocab_size", c.VocabSize);
            foreach (var (name, value) in c.ExtraFields.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                json.WritePropertyName(name);
                value.WriteTo(json);
            }
            json.WriteEndObject();
        }
        AtomicFile.Write(path, s => s.Write(buffer.WrittenSpan));
    }

    /// <summary>Typed access to fields with messages naming file and field.</summary>
    private readonly struct FieldReader(string path, JsonElement root)
    {
        private InvalidDataException Bad(string field, string what) => new($"{path}: field '{field}': {what}");

        private JsonElement? Find(string field) =>
            root.TryGetProperty(field, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public string RequiredString(string field) => OptionalString(field) ?? throw Bad(field, "missing (required)");

        public int RequiredInt(string field) => OptionalInt(field) ?? throw Bad(field, "missing (required)");

        public string? OptionalString(string field)
        {
            if (Find(field) is not { } v) return null;
            return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(field, $"is {v.ValueKind}, expected a string");
        }

        public int? OptionalInt(string field)
        {
            if (Find(field) is not { } v) return null;
            return ToInt(field, v);
        }

        private int ToInt(string field, JsonElement v) =>
            v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw Bad(field, $"{v.GetRawText()} is not a 32-bit integer");

        public double? OptionalDouble(string field)
        {
            if (Find(field) is not { } v) return null;
            return v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw Bad(field, $"{v.GetRawText()} is not a number");
        }

        public bool? OptionalBool(string field)
        {
            if (Find(field) is not { } v) return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Bad(field, $"{v.GetRawText()} is not true or false"),
            };
        }

        public IReadOnlyList<string>? OptionalStringList(string field)
        {
            if (Find(field) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw Bad(field, $"is {v.ValueKind}, expected a list of strings");
            var list = new List<string>();
            foreach (var e in v.EnumerateArray())
                list.Add(e.ValueKind == JsonValueKind.String ? e.GetString()! : throw Bad(field, $"{e.GetRawText()} is not a string"));
            return list;
        }

        public IReadOnlyList<int>? OptionalIntOrList(string field)
        {
            if (Find(field) is not { } v) return null;
            if (v.ValueKind == JsonValueKind.Number) return new[] { ToInt(field, v) };
            if (v.ValueKind != JsonValueKind.Array) throw Bad(field, $"is {v.ValueKind}, expected an integer or a list of integers");
            var list = new List<int>();
            foreach (var e in v.EnumerateArray()) list.Add(ToInt(field, e));
            return list;
        }
    }
}
