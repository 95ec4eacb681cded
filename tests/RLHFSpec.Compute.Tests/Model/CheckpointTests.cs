using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>Checkpoint folders: save/load round trips (Llama untied F32, Qwen2 tied BF16 sharded), a folder written by
/// hand in HF layout, and the bad inputs a checkpoint can have, each error naming the file and the tensor or field.</summary>
public class CheckpointTests
{
    private FormatsTestFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new FormatsTestFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private static ModelConfig TinyConfig(string modelType, int vocab, bool tied) => new()
    {
        ModelType = modelType,
        VocabSize = vocab,
        HiddenSize = 16,
        IntermediateSize = 24,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        TieWordEmbeddings = tied,
        RopeTheta = 500000,
        MaxPositionEmbeddings = 128,
        EosTokenIds = new[] { vocab - 2 },
    };

    private static Dictionary<string, HostTensor> RandomWeights(ModelConfig c, int seed)
    {
        var rng = new Random(seed);
        var result = new Dictionary<string, HostTensor>();
        foreach (var (name, shape) in c.ExpectedTensors())
        {
            var data = new float[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1);
            result[name] = new HostTensor(shape, data);
        }
        return result;
    }

    private (ModelConfig Config, Dictionary<string, HostTensor> Weights, TextTokenizer Tokenizer) Tiny(string modelType = "llama", bool tied = false, int seed = 1)
    {
        var tok = TokenizerTests.TrainSmall();
        var config = TinyConfig(modelType, tok.VocabSize + 6, tied);  // padded vocabulary, as real models have
        return (config, RandomWeights(config, seed), tok);
    }

    [Test]
    public void LlamaF32RoundTrip()
    {
        var (config, weights, tok) = Tiny();
        string dir = _folder.File("llama");
        Checkpoint.Save(dir, config, weights, tok);
        Assert.That(Directory.GetFiles(dir).Select(Path.GetFileName), Is.EquivalentTo(new[]
        {
            "config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json",
        }));
        using var ck = Checkpoint.Load(dir);
        Assert.That(ck.Config.TorchDtype, Is.EqualTo(TensorDType.F32));
        Assert.That(ck.Config.Architectures, Is.EqualTo(new[] { "LlamaForCausalLM" }));
        Assert.That((ck.Config.NumKeyValueHeads, ck.Config.RopeTheta), Is.EqualTo((2, 500000.0)));
        foreach (var (name, t) in weights)
        {
            var back = ck.ReadTensor(name);
            Assert.That(back.Shape, Is.EqualTo(t.Shape), name);
            Assert.That(back.Data, Is.EqualTo(t.Data), name);
        }
        Assert.That(ck.Tokenizer.Fingerprint, Is.EqualTo(tok.Fingerprint));
        Assert.That(ck.Tokenizer.EosId, Is.EqualTo(tok.EosId));
        var gen = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "generation_config.json")))!;
        Assert.That(gen["eos_token_id"]!.GetValue<int>(), Is.EqualTo(config.EosTokenIds[0]));
        Assert.That(Directory.GetFileSystemEntries(_folder.Path), Has.Length.EqualTo(1), "no temporary folder left");
    }

    [Test]
    public void Qwen2TiedBf16ShardedRoundTrip()
    {
        var (config, weights, tok) = Tiny("qwen2", tied: true);
        string dir = _folder.File("qwen");
        Checkpoint.Save(dir, config, weights, tok, TensorDType.BF16, maxShardBytes: 4096);
        Assert.That(File.Exists(Path.Combine(dir, SafetensorsWriter.IndexFileName)));
        using var ck = Checkpoint.Load(dir);
        Assert.That(ck.Weights.Files.Count, Is.GreaterThan(1));
        Assert.That(ck.Config.TorchDtype, Is.EqualTo(TensorDType.BF16));
        Assert.That(ck.Weights.Contains("model.layers.1.self_attn.k_proj.bias"));
        Assert.That(ck.Weights.Contains("lm_head.weight"), Is.False);
        var q = ck.ReadTensor("model.layers.0.self_attn.q_proj.weight");
        var original = weights["model.layers.0.self_attn.q_proj.weight"].Data;
        for (int i = 0; i < original.Length; i++) Assert.That(q.Data[i], Is.EqualTo(original[i]).Within(Math.Abs(original[i]) / 128 + 1e-30));
    }

    [Test]
    public void SaveReplacesAnExistingCheckpointAndFailsCleanly()
    {
        var (config, weights, tok) = Tiny();
        string dir = _folder.File("ck");
        Checkpoint.Save(dir, config, weights, tok, maxShardBytes: 4096);
        Assert.That(File.Exists(Path.Combine(dir, SafetensorsWriter.IndexFileName)));
        Checkpoint.Save(dir, config, weights, tok);
        Assert.That(File.Exists(Path.Combine(dir, SafetensorsWriter.IndexFileName)), Is.False, "old shards gone with the old folder");
        using (var ck = Checkpoint.Load(dir)) Assert.That(ck.Weights.Files.Count, Is.EqualTo(1));

        var missing = new Dictionary<string, HostTensor>(weights);
        missing.Remove("model.layers.1.mlp.up_proj.weight");
        var e = Assert.Throws<ArgumentException>(() => Checkpoint.Save(_folder.File("bad"), config, missing, tok));
        Assert.That(e!.Message, Does.Contain("'model.layers.1.mlp.up_proj.weight'"));
        var extra = new Dictionary<string, HostTensor>(weights) { ["lm_head.bias"] = new(new[] { 1 }, new[] { 0f }) };
        Assert.That(Assert.Throws<ArgumentException>(() => Checkpoint.Save(dir, config, extra, tok))!.Message, Does.Contain("'lm_head.bias'"));
        Assert.That(Directory.GetFileSystemEntries(_folder.Path).Select(Path.GetFileName), Is.EqualTo(new[] { "ck" }), "no temp, no 'bad'");
    }

    /// <summary>A Qwen2 checkpoint written byte by byte as transformers lays it out: config.json text, safetensors with
    /// the header in one order and the data in another, tokenizer.json by hand.</summary>
    [Test]
    public void LoadsAFolderWrittenInHfLayout()
    {
        string dir = _folder.File("hf");
        Directory.CreateDirectory(dir);
        var config = TinyConfig("qwen2", 300, tied: true) with { TorchDtype = TensorDType.F16 };
        var weights = RandomWeights(config, 7);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
        {"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 298, "eos_token_id": 298, "hidden_act": "silu",
         "hidden_size": 16, "intermediate_size": 24, "max_position_embeddings": 128, "model_type": "qwen2",
         "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
         "rope_theta": 1000000.0, "sliding_window": 128, "tie_word_embeddings": true, "torch_dtype": "float16",
         "transformers_version": "4.45.0", "use_cache": true, "use_sliding_window": false, "vocab_size": 300}
        """);
        WriteRawF16(Path.Combine(dir, "model.safetensors"), weights);
        var tok = TextTokenizer.FromBpe(new BpeModelData(
            Enumerable.Range(0, 256).ToDictionary(b => ByteLevelAlphabet.Encode((byte)b).ToString(), b => b),
            Array.Empty<(string, string)>(), new Dictionary<string, int> { ["<|endoftext|>"] = 298 }, BpeModelData.Gpt2Pattern));
        TokenizerJson.Write(Path.Combine(dir, "tokenizer.json"), tok.Bpe!);

        using var ck = Checkpoint.Load(dir);
        Assert.That(ck.Config.RopeTheta, Is.EqualTo(1e6));
        Assert.That(ck.Tokenizer.EosId, Is.EqualTo(298), "from config.json when tokenizer_config.json is absent");
        Assert.That(ck.Tokenizer.BosId, Is.EqualTo(298));
        foreach (var (name, t) in weights)
            Assert.That(ck.ReadTensor(name).Data, Is.EqualTo(t.Data.Select(v => (float)(Half)v).ToArray()), name);
    }

    /// <summary>Header keys in ExpectedTensors order, data in reverse order, no metadata: legal, unlike our writer's.</summary>
    private static void WriteRawF16(string path, Dictionary<string, HostTensor> weights)
    {
        var names = weights.Keys.ToList();
        var offsets = new Dictionary<string, (long, long)>();
        long pos = 0;
        foreach (var n in Enumerable.Reverse(names))
        {
            offsets[n] = (pos, pos + 2L * weights[n].Data.Length);
            pos = offsets[n].Item2;
        }
        var header = new JsonObject();
        foreach (var n in names)
            header[n] = new JsonObject
            {
                ["dtype"] = "F16",
                ["shape"] = new JsonArray(weights[n].Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offsets[n].Item1, offsets[n].Item2),
            };
        var h = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var s = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
        s.Write(len);
        s.Write(h);
        foreach (var n in Enumerable.Reverse(names))
            foreach (var v in weights[n].Data)
            {
                var b = new byte[2];
                BinaryPrimitives.WriteHalfLittleEndian(b, (Half)v);
                s.Write(b);
            }
    }

    private string SavedTiny(string name, string modelType = "llama", bool tied = false)
    {
        var (config, weights, tok) = Tiny(modelType, tied);
        string dir = _folder.File(name);
        Checkpoint.Save(dir, config, weights, tok);
        return dir;
    }

    /// <summary>Rewrites model.safetensors with one change to the tensors.</summary>
    private static void EditWeights(string dir, Action<Dictionary<string, HostTensor>> edit, TensorDType dtype = TensorDType.F32)
    {
        string path = Path.Combine(dir, "model.safetensors");
        Dictionary<string, HostTensor> tensors;
        using (var f = SafetensorsFile.Open(path)) tensors = f.Names.ToDictionary(n => n, f.ReadTensor);
        edit(tensors);
        SafetensorsWriter.Write(path, tensors, dtype);
    }

    [Test]
    public void MissingTensorNamesFileAndTensor()
    {
        string dir = SavedTiny("m");
        EditWeights(dir, t => t.Remove("model.layers.1.self_attn.v_proj.weight"));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.StartWith(Path.Combine(dir, "model.safetensors") + ": tensor 'model.layers.1.self_attn.v_proj.weight' is missing"));
    }

    [Test]
    public void ConfigWithFewerLayersThanTheWeightsNamesTheLayerAndField()
    {
        string dir = SavedTiny("fewer");
        string config = Path.Combine(dir, "config.json");
        var node = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        node["num_hidden_layers"] = 1;
        File.WriteAllText(config, node.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.StartWith(Path.Combine(dir, "model.safetensors") + ": tensor 'model.layers.1.")
            .And.Contain("field 'num_hidden_layers' is 1"));
    }

    [Test]
    public void QwenWithoutBiasIsAMissingTensor()
    {
        string dir = SavedTiny("q", "qwen2", tied: true);
        EditWeights(dir, t => t.Remove("model.layers.0.self_attn.q_proj.bias"));
        Assert.That(Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose())!.Message, Does.Contain("'model.layers.0.self_attn.q_proj.bias'"));
    }

    [Test]
    public void WrongShapeNamesFileAndTensor()
    {
        string dir = SavedTiny("s");
        EditWeights(dir, t => t["model.layers.0.mlp.down_proj.weight"] = new HostTensor(new[] { 24, 16 }, new float[24 * 16]));
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.StartWith(Path.Combine(dir, "model.safetensors") + ": tensor 'model.layers.0.mlp.down_proj.weight' has shape [24, 16]"));
        Assert.That(e.Message, Does.Contain("[16, 24]").And.Contain("config.json"));
    }

    [Test]
    public void DTypeNotMatchingConfigNamesFileAndTensor()
    {
        string dir = SavedTiny("d");
        EditWeights(dir, _ => { }, TensorDType.BF16);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.Contain("model.safetensors: tensor 'model.embed_tokens.weight' has dtype BF16").And.Contain("float32"));
    }

    [Test]
    public void TruncatedWeightsNameTheFile()
    {
        string dir = SavedTiny("t");
        string path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^100]);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.StartWith(path + ": tensor '").And.Contain("truncated"));
    }

    [Test]
    public void HeadsNotDividingHiddenNamesConfigField()
    {
        string dir = SavedTiny("h");
        string config = Path.Combine(dir, "config.json");
        var node = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        node.Remove("head_dim");
        node["num_attention_heads"] = 3;
        node["num_key_value_heads"] = 3;
        File.WriteAllText(config, node.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.StartWith(config + ": field 'num_attention_heads'").And.Contain("do not divide hidden_size 16"));
    }

    [Test]
    public void TokenizerLargerThanVocabSize()
    {
        string dir = SavedTiny("v");
        string config = Path.Combine(dir, "config.json");
        var node = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        node["vocab_size"] = 100;
        node["eos_token_id"] = 5;
        File.WriteAllText(config, node.ToJsonString());
        EditWeights(dir, t =>
        {
            t["model.embed_tokens.weight"] = new HostTensor(new[] { 100, 16 }, new float[1600]);
            t["lm_head.weight"] = new HostTensor(new[] { 100, 16 }, new float[1600]);
        });
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir).Dispose());
        Assert.That(e!.Message, Does.StartWith(Path.Combine(dir, "tokenizer.json") + ": tokenizer has").And.Contain("field 'vocab_size' is 100"));
    }

    [Test]
    public void DraftWithTheSameVocabularyIsCompatible()
    {
        using var policy = Checkpoint.Load(SavedTiny("policy"));
        var (_, _, tok) = Tiny();
        var draftConfig = TinyConfig("llama", policy.Config.VocabSize, tied: true) with { NumHiddenLayers = 1 };
        Checkpoint.Save(_folder.File("draft"), draftConfig, RandomWeights(draftConfig, 3), tok);
        using var draft = Checkpoint.Load(_folder.File("draft"));
        Assert.DoesNotThrow(() => Checkpoint.CheckCompatibleDraft(policy, draft));
    }

    [Test]
    public void DraftVocabularyMismatchNamesBothFolders()
    {
        using var policy = Checkpoint.Load(SavedTiny("policy"));
        var (_, _, tok) = Tiny();

        var bigger = TinyConfig("llama", policy.Config.VocabSize + 1, tied: true);
        Checkpoint.Save(_folder.File("draft1"), bigger, RandomWeights(bigger, 4), tok);
        using (var draft = Checkpoint.Load(_folder.File("draft1")))
        {
            var e = Assert.Throws<InvalidDataException>(() => Checkpoint.CheckCompatibleDraft(policy, draft));
            Assert.That(e!.Message, Does.Contain(policy.Folder).And.Contain(draft.Folder).And.Contain("'vocab_size'"));
        }

        // Same size, different merges: a tokenizer trained with fewer merges plus padding specials to the same size.
        var other = TextTokenizer.FromBpe(ByteLevelBpeTrainer.Train(TokenizerTests.ArithmeticCorpus(), 3,
            Enumerable.Range(0, tok.VocabSize - 256 - 3).Select(i => $"<|x{i}|>").ToList()));
        Assert.That(other.VocabSize, Is.EqualTo(tok.VocabSize));
        var same = TinyConfig("llama", policy.Config.VocabSize, tied: true);
        Checkpoint.Save(_folder.File("draft2"), same, RandomWeights(same, 5), other);
        using (var draft = Checkpoint.Load(_folder.File("draft2")))
        {
            var e = Assert.Throws<InvalidDataException>(() => Checkpoint.CheckCompatibleDraft(policy, draft));
            Assert.That(e!.Message, Does.Contain(policy.Folder).And.Contain(draft.Folder).And.Contain("vocabularies differ"));
        }
    }
    [Test]
    public void Generation_models_load_a_compatible_draft_and_refuse_an_incompatible_one()
    {
        string policyDir = SavedTiny("gm-policy");
        int vocab;
        using (var p = Checkpoint.Load(policyDir)) vocab = p.Config.VocabSize;
        var (_, _, tok) = Tiny();
        var draftConfig = TinyConfig("llama", vocab, tied: true) with { NumHiddenLayers = 1 };
        Checkpoint.Save(_folder.File("gm-draft"), draftConfig, RandomWeights(draftConfig, 3), tok);
        using (var models = RLHFSpec.Compute.Model.Transformer.GenerationModels.Load(policyDir, _folder.File("gm-draft")))
        {
            Assert.That(models.Draft, Is.Not.Null);
            using var backend = RLHFSpec.Compute.Engine.Devices.Open("cpu");
            using var pair = models.Open(backend, new RLHFSpec.Compute.Model.Transformer.TransformerOptions { KvMemoryBudgetBytes = 4L << 20 });
            Assert.That((pair.Policy.Weights, pair.Draft?.Weights), Is.EqualTo((models.Policy, models.Draft)));
        }
        var bigger = TinyConfig("llama", vocab + 1, tied: true);
        Checkpoint.Save(_folder.File("gm-bad"), bigger, RandomWeights(bigger, 4), tok);
        var e = Assert.Throws<InvalidDataException>(() => RLHFSpec.Compute.Model.Transformer.GenerationModels.Load(policyDir, _folder.File("gm-bad")));
        Assert.That(e!.Message, Does.Contain("'vocab_size'"));
    }
}
