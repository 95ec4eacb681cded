namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// A model checkpoint folder in Hugging Face layout: config.json, model.safetensors (or shards + index),
/// tokenizer files, tokenizer_config.json, generation_config.json. Loading checks every tensor against the config
/// (present, shape, dtype) and the tokenizer against vocab_size; saving writes into a temporary sibling folder that is
/// renamed into place, so a failure never leaves a half-written checkpoint under the target name.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    /// <summary>transformers' default shard size for save_pretrained (5 GB).</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    private Checkpoint(string folder, ModelConfig config, SafetensorsCollection weights, TextTokenizer tokenizer)
    {
        Folder = folder;
        Config = config;
        Weights = weights;
        Tokenizer = tokenizer;
    }

    public string Folder { get; }
    public ModelConfig Config { get; }

    /// <summary>The weights, read on demand (positional reads, not loaded whole).</summary>
    public SafetensorsCollection Weights { get; }

    public TextTokenizer Tokenizer { get; }

    /// <summary>Reads one tensor as floats with its shape.</summary>
    public HostTensor ReadTensor(string name) => Weights.ReadTensor(name);

    /// <summary>Tokens that end a response: config.json's eos_token_id(s) and the tokenizer's end-of-sequence token.</summary>
    public HashSet<int> StopTokenIds()
    {
        var stops = new HashSet<int>(Config.EosTokenIds);
        if (Tokenizer.EosId is { } eos) stops.Add(eos);
        return stops;
    }

    /// <summary>Opens and checks a checkpoint folder. Errors name the file and the tensor or field.</summary>
    public static Checkpoint Load(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: checkpoint folder not found");
        string configPath = Path.Combine(folder, ModelConfig.FileName);
        var config = ModelConfig.Load(configPath);
        var weights = SafetensorsCollection.OpenFolder(folder);
        try
        {
            config.CheckTensors(weights, configPath);
            var tokenizer = TextTokenizer.Load(folder);
            string tokenizerFile = tokenizer.SourceFiles.Count > 0 ? tokenizer.SourceFiles[0] : folder;
            if (tokenizer.VocabSize > config.VocabSize)
                throw new InvalidDataException($"{tokenizerFile}: tokenizer has {tokenizer.VocabSize} tokens but {configPath} field 'vocab_size' is {config.VocabSize}");
            tokenizer = tokenizer.WithSpecialIds(
                tokenizer.BosId is null ? InTokenizer(config.BosTokenId, tokenizer) : null,
                tokenizer.EosId is null && config.EosTokenIds.Count > 0 ? InTokenizer(config.EosTokenIds[0], tokenizer) : null,
                tokenizer.PadId is null ? InTokenizer(config.PadTokenId, tokenizer) : null);
            GenerationConfigJson.Check(Path.Combine(folder, GenerationConfigJson.FileName), config.VocabSize);
            return new Checkpoint(folder, config, weights, tokenizer);
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes a checkpoint: the config (its torch_dtype set to <paramref name="dtype"/>, default the config's or F32),
    /// the tensors (checked first against the config: every expected tensor, no other, shapes as expected), sharded
    /// above <paramref name="maxShardBytes"/>, the tokenizer and generation_config.json. An existing folder is replaced
    /// only once the new one is complete.
    /// </summary>
    public static void Save(string folder, ModelConfig config, IReadOnlyDictionary<string, HostTensor> tensors, TextTokenizer tokenizer,
        TensorDType? dtype = null, long maxShardBytes = DefaultMaxShardBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(tokenizer);
        config.Validate();
        var weightDType = dtype ?? config.TorchDtype ?? TensorDType.F32;
        if (!weightDType.IsWritable()) throw new ArgumentException($"{folder}: cannot write weights as {weightDType.ToHeaderName()}", nameof(dtype));
        CheckTensorsToSave(folder, config, tensors);
        if (tokenizer.VocabSize > config.VocabSize)
            throw new ArgumentException($"{folder}: tokenizer has {tokenizer.VocabSize} tokens but config vocab_size is {config.VocabSize}", nameof(tokenizer));

        // The old checkpoint stays whole until the new one has taken its name.
        AtomicFile.WriteFolder(folder, temp =>
        {
            var saved = config with { TorchDtype = weightDType };
            if (saved.Architectures.Count == 0) saved = saved with { Architectures = new[] { saved.DefaultArchitecture } };
            saved.Save(Path.Combine(temp, ModelConfig.FileName));
            SafetensorsWriter.WriteSharded(temp, tensors, weightDType, maxShardBytes);
            tokenizer.Save(temp, config.MaxPositionEmbeddings);
            GenerationConfigJson.Write(Path.Combine(temp, GenerationConfigJson.FileName), saved, tokenizer.PadId);
        });
    }

    /// <summary>
    /// A draft model must share the policy's vocabulary exactly (same vocab_size, same tokenizer contents): draft
    /// tokens are verified by id. InvalidDataException naming both folders and the first difference.
    /// </summary>
    public static void CheckCompatibleDraft(Checkpoint policy, Checkpoint draft) => CheckSameVocabulary(policy, draft, "draft");

    /// <summary>
    /// A model that reads the policy's token ids (a draft, a reward model) must share its vocabulary exactly: same
    /// vocab_size, same tokenizer contents. InvalidDataException naming both folders, the role and the first difference.
    /// </summary>
    public static void CheckSameVocabulary(Checkpoint policy, Checkpoint other, string role)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(other);
        string both = $"{role} {other.Folder} and policy {policy.Folder}";
        if (policy.Config.VocabSize != other.Config.VocabSize)
            throw new InvalidDataException($"{both}: vocabularies differ: config.json field 'vocab_size' is {other.Config.VocabSize} in the {role}, {policy.Config.VocabSize} in the policy");
        if (policy.Tokenizer.Fingerprint == other.Tokenizer.Fingerprint) return;
        string detail = FirstDifference(policy.Tokenizer, other.Tokenizer, role) ?? $"{other.Tokenizer.Kind} tokenizer contents differ from the policy's {policy.Tokenizer.Kind}";
        throw new InvalidDataException($"{both}: vocabularies differ: {detail}");
    }

    /// <summary>
    /// Weights read from this checkpoint must be finite: a NaN or infinity would surface much later as a failed step
    /// far from its cause. InvalidDataException naming the file, the tensor and the element.
    /// </summary>
    public void CheckFinite(Onnx.TensorArena loaded)
    {
        ArgumentNullException.ThrowIfNull(loaded);
        foreach (var name in loaded.Names)
        {
            var span = loaded.Span(name);
            int bad = FirstNonFinite(span);
            if (bad < 0) continue;
            string file = Weights.Contains(name) ? Weights.FileOf(name).FilePath : Folder;
            throw new InvalidDataException($"{file}: tensor '{name}' holds {span[bad]} at element {bad}; weights must be finite");
        }
    }

    private static int FirstNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return i;
        return -1;
    }

    public void Dispose() => Weights.Dispose();

    private static int? InTokenizer(int? id, TextTokenizer tokenizer) => id is { } v && v < tokenizer.VocabSize ? v : null;

    private static void CheckTensorsToSave(string folder, ModelConfig config, IReadOnlyDictionary<string, HostTensor> tensors)
    {
        var expected = config.ExpectedTensors();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            names.Add(name);
            if (!tensors.TryGetValue(name, out var t))
                throw new ArgumentException($"{folder}: tensor '{name}' is missing from the tensors to save", nameof(tensors));
            if (!t.Shape.SequenceEqual(shape))
                throw new ArgumentException($"{folder}: tensor '{name}' has shape {TensorInfo.FormatShape(t.Shape)} but the config implies {TensorInfo.FormatShape(shape)}", nameof(tensors));
        }
        foreach (var name in tensors.Keys)
            if (!names.Contains(name))
                throw new ArgumentException($"{folder}: tensor '{name}' is not part of a {config.ModelType} model with this config", nameof(tensors));
    }

    private static string? FirstDifference(TextTokenizer policy, TextTokenizer draft, string role)
    {
        if (policy.VocabSize != draft.VocabSize)
            return $"tokenizer has {draft.VocabSize} tokens in the {role}, {policy.VocabSize} in the policy";
        foreach (var (token, id) in policy.SpecialTokens)
            if (!draft.SpecialTokens.TryGetValue(token, out int other) || other != id)
                return $"special token '{token}' is id {id} in the policy but not in the {role}";
        if (policy.Bpe is { } p && draft.Bpe is { } d)
        {
            foreach (var (token, id) in p.Vocabulary)
                if (!d.Vocabulary.TryGetValue(token, out int other) || other != id)
                    return $"token '{token}' is id {id} in the policy but {(d.Vocabulary.ContainsKey(token) ? "id " + d.Vocabulary[token] : "absent")} in the {role}";
            for (int i = 0; i < Math.Min(p.Merges.Count, d.Merges.Count); i++)
                if (p.Merges[i] != d.Merges[i]) return $"merge {i} differs";
            if (p.Merges.Count != d.Merges.Count) return $"{d.Merges.Count} merges in the {role}, {p.Merges.Count} in the policy";
        }
        return null;
    }
}
