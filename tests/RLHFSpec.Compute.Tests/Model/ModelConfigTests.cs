using System.Text.Json;
using System.Text.Json.Nodes;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>config.json: reading real-world layouts (Qwen2 and Llama as transformers saves them), round trip,
/// validation messages naming file and field, and the expected tensor list.</summary>
public class ModelConfigTests
{
    private FormatsTestFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new FormatsTestFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    /// <summary>The config.json of Qwen2.5-0.5B-Instruct, as published.</summary>
    internal const string Qwen25Json = """
    {
      "architectures": ["Qwen2ForCausalLM"],
      "attention_dropout": 0.0,
      "bos_token_id": 151643,
      "eos_token_id": 151645,
      "hidden_act": "silu",
      "hidden_size": 896,
      "initializer_range": 0.02,
      "intermediate_size": 4864,
      "max_position_embeddings": 32768,
      "max_window_layers": 21,
      "model_type": "qwen2",
      "num_attention_heads": 14,
      "num_hidden_layers": 24,
      "num_key_value_heads": 2,
      "rms_norm_eps": 1e-06,
      "rope_theta": 1000000.0,
      "sliding_window": 32768,
      "tie_word_embeddings": true,
      "torch_dtype": "bfloat16",
      "transformers_version": "4.43.1",
      "use_cache": true,
      "use_sliding_window": false,
      "vocab_size": 151936
    }
    """;

    /// <summary>A TinyLlama-style config with an eos list and no head_dim/kv heads.</summary>
    private const string LlamaJson = """
    {
      "architectures": ["LlamaForCausalLM"],
      "bos_token_id": 1,
      "eos_token_id": [2, 3],
      "hidden_size": 64,
      "intermediate_size": 172,
      "model_type": "llama",
      "num_attention_heads": 4,
      "num_hidden_layers": 2,
      "rms_norm_eps": 1e-05,
      "vocab_size": 100,
      "rope_scaling": null,
      "attention_bias": true
    }
    """;

    private string Write(string json, string name = "config.json")
    {
        string path = _folder.File(name);
        File.WriteAllText(path, json);
        return path;
    }

    [Test]
    public void ReadsQwen2()
    {
        var c = ModelConfig.Load(Write(Qwen25Json));
        Assert.That(c.ModelType, Is.EqualTo("qwen2"));
        Assert.That((c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers), Is.EqualTo((151936, 896, 4864, 24)));
        Assert.That((c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim), Is.EqualTo((14, 2, 64)));
        Assert.That(c.RopeTheta, Is.EqualTo(1e6));
        Assert.That(c.RmsNormEps, Is.EqualTo(1e-6));
        Assert.That(c.TieWordEmbeddings, Is.True);
        Assert.That(c.TorchDtype, Is.EqualTo(TensorDType.BF16));
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 151645 }));
        Assert.That(c.HasQkvBias && !c.HasOutputBias, "qwen2 has q/k/v biases only");
        Assert.That(c.ExtraFields.Keys, Does.Contain("sliding_window").And.Contain("transformers_version"));
        Assert.That(c.UsesSlidingWindow || c.HasRopeScaling, Is.False);
    }

    [Test]
    public void ReadsLlamaDefaults()
    {
        var c = ModelConfig.Load(Write(LlamaJson));
        Assert.That(c.NumKeyValueHeads, Is.EqualTo(4), "defaults to attention heads");
        Assert.That(c.HeadDim, Is.EqualTo(16), "defaults to hidden / heads");
        Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
        Assert.That(c.MaxPositionEmbeddings, Is.EqualTo(2048));
        Assert.That(c.TieWordEmbeddings, Is.False);
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(c.TorchDtype, Is.Null);
        Assert.That(c.HasQkvBias && c.HasOutputBias && !c.HasMlpBias);
        Assert.That(c.HasRopeScaling, Is.False, "rope_scaling: null");
        var node = JsonNode.Parse(LlamaJson)!.AsObject();
        node["rope_scaling"] = JsonNode.Parse("{\"rope_type\": \"llama3\", \"factor\": 8.0}");
        Assert.That(ModelConfig.Load(Write(node.ToJsonString(), "scaled.json")).HasRopeScaling, Is.True);
    }

    [Test]
    public void SaveLoadRoundTripKeepsEveryFieldAndExtras()
    {
        var c = ModelConfig.Load(Write(Qwen25Json));
        string path = _folder.File("out/config.json");
        c.Save(path);
        var back = ModelConfig.Load(path);
        Assert.That(Describe(back), Is.EqualTo(Describe(c)));
        var node = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        Assert.That(node["sliding_window"]!.GetValue<int>(), Is.EqualTo(32768));
        Assert.That(node["torch_dtype"]!.GetValue<string>(), Is.EqualTo("bfloat16"));
        Assert.That(node["architectures"]![0]!.GetValue<string>(), Is.EqualTo("Qwen2ForCausalLM"));
        Assert.That(Directory.GetFiles(_folder.File("out")), Has.Length.EqualTo(1), "no temporary file left");
    }

    private static string Describe(ModelConfig c) => JsonSerializer.Serialize(new object[]
    {
        c.ModelType, c.Architectures, c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads,
        c.NumKeyValueHeads, c.HeadDim, c.RmsNormEps, c.RopeTheta, c.MaxPositionEmbeddings, c.TieWordEmbeddings,
        c.BosTokenId ?? -1, c.EosTokenIds, c.PadTokenId ?? -1, c.TorchDtype?.ToString() ?? "", c.AttentionBias, c.MlpBias,
        c.HiddenAct, c.ExtraFields.Keys.Order().ToArray(),
    });

    private static IEnumerable<TestCaseData> BadConfigs()
    {
        yield return new TestCaseData("vocab_size", null, "vocab_size", "missing").SetName("MissingVocab");
        yield return new TestCaseData("hidden_size", "0", "hidden_size", "positive").SetName("ZeroHidden");
        yield return new TestCaseData("num_attention_heads", "3", "num_attention_heads", "do not divide hidden_size 64").SetName("HeadsNotDividingHidden");
        yield return new TestCaseData("num_key_value_heads", "3", "num_key_value_heads", "do not divide").SetName("KvHeadsNotDividingHeads");
        yield return new TestCaseData("hidden_act", "\"gelu\"", "hidden_act", "'gelu'").SetName("UnsupportedAct");
        yield return new TestCaseData("model_type", "\"gpt2\"", "model_type", "'gpt2'").SetName("UnsupportedModelType");
        yield return new TestCaseData("vocab_size", "\"100\"", "vocab_size", "not a 32-bit integer").SetName("WrongType");
        yield return new TestCaseData("eos_token_id", "100", "eos_token_id", "outside the vocabulary").SetName("EosOutsideVocab");
        yield return new TestCaseData("torch_dtype", "\"int8\"", "torch_dtype", "'int8'").SetName("UnsupportedDtype");
        yield return new TestCaseData("head_dim", "15", "head_dim", "odd").SetName("OddHeadDim");
        yield return new TestCaseData("rms_norm_eps", "-1", "rms_norm_eps", "positive").SetName("NegativeEps");
    }

    [TestCaseSource(nameof(BadConfigs))]
    public void BadFieldIsNamed(string field, string? value, string expectedField, string fragment)
    {
        var node = JsonNode.Parse(LlamaJson)!.AsObject();
        node.Remove(field);
        if (value is not null) node[field] = JsonNode.Parse(value);
        string path = Write(node.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ModelConfig.Load(path));
        Assert.That(e!.Message, Does.StartWith($"{path}: field '{expectedField}'"));
        Assert.That(e.Message, Does.Contain(fragment));
    }

    [Test]
    public void BadJsonAndMissingFile()
    {
        string path = Write("{\"model_type\": ");
        Assert.That(Assert.Throws<InvalidDataException>(() => ModelConfig.Load(path))!.Message, Does.StartWith(path + ": not valid JSON"));
        Assert.Throws<FileNotFoundException>(() => ModelConfig.Load(_folder.File("none.json")));
    }

    [Test]
    public void ValidateInCodeIsArgumentException()
    {
        var c = new ModelConfig { ModelType = "llama", VocabSize = 10, HiddenSize = 10, IntermediateSize = 4, NumHiddenLayers = 1, NumAttentionHeads = 4 };
        Assert.That(Assert.Throws<ArgumentException>(c.Validate)!.Message, Does.Contain("'num_attention_heads'"));
        Assert.Throws<ArgumentException>(() => c.Save(_folder.File("c.json")));
        Assert.That(File.Exists(_folder.File("c.json")), Is.False);
    }

    [Test]
    public void ExpectedTensorsOfQwen2()
    {
        var c = ModelConfig.Load(Write(Qwen25Json));
        var t = c.ExpectedTensors().ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(t, Has.Count.EqualTo(1 + 24 * 12 + 1), "embed, 12 per layer (incl. 3 biases), norm; tied: no lm_head");
        Assert.That(t["model.embed_tokens.weight"], Is.EqualTo(new[] { 151936, 896 }));
        Assert.That(t["model.layers.23.self_attn.q_proj.weight"], Is.EqualTo(new[] { 896, 896 }));
        Assert.That(t["model.layers.0.self_attn.k_proj.weight"], Is.EqualTo(new[] { 128, 896 }));
        Assert.That(t["model.layers.0.self_attn.v_proj.bias"], Is.EqualTo(new[] { 128 }));
        Assert.That(t["model.layers.0.self_attn.o_proj.weight"], Is.EqualTo(new[] { 896, 896 }));
        Assert.That(t.ContainsKey("model.layers.0.self_attn.o_proj.bias"), Is.False);
        Assert.That(t["model.layers.5.mlp.down_proj.weight"], Is.EqualTo(new[] { 896, 4864 }));
        Assert.That(t["model.layers.5.mlp.gate_proj.weight"], Is.EqualTo(new[] { 4864, 896 }));
        Assert.That(t.ContainsKey("lm_head.weight"), Is.False);
    }

    [Test]
    public void ExpectedTensorsOfUntiedLlamaWithExplicitHeadDim()
    {
        var node = JsonNode.Parse(LlamaJson)!.AsObject();
        node["head_dim"] = 8;
        node["num_key_value_heads"] = 2;
        node["attention_bias"] = false;
        var c = ModelConfig.Load(Write(node.ToJsonString()));
        var t = c.ExpectedTensors().ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(t["model.layers.1.self_attn.q_proj.weight"], Is.EqualTo(new[] { 32, 64 }));
        Assert.That(t["model.layers.1.self_attn.k_proj.weight"], Is.EqualTo(new[] { 16, 64 }));
        Assert.That(t["model.layers.1.self_attn.o_proj.weight"], Is.EqualTo(new[] { 64, 32 }));
        Assert.That(t["lm_head.weight"], Is.EqualTo(new[] { 100, 64 }));
        Assert.That(t.Keys.Any(k => k.EndsWith(".bias")), Is.False);
    }

    [Test]
    public void SequenceClassifiersHaveAScoreHeadInsteadOfTheLmHead()
    {
        var llama = ModelConfig.Load(Write(LlamaJson));
        Assert.That(llama.IsSequenceClassifier, Is.False);
        var scalar = llama.AsScalarHead();
        Assert.That((scalar.IsSequenceClassifier, scalar.NumLabels, scalar.Architectures[0]), Is.EqualTo((true, 1, "LlamaForSequenceClassification")));
        var t = scalar.ExpectedTensors().ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.That(t[ModelConfig.ScoreWeight], Is.EqualTo(new[] { 1, 64 }));
        Assert.That(t.ContainsKey("lm_head.weight"), Is.False);
        string path = _folder.File("scalar.json");
        scalar.Save(path);
        var back = ModelConfig.Load(path);
        Assert.That((back.NumLabels, back.Architectures.Single()), Is.EqualTo((1, "LlamaForSequenceClassification")));

        // Without num_labels, transformers counts id2label, else defaults to 2.
        var node = JsonNode.Parse(LlamaJson)!.AsObject();
        node["architectures"] = new JsonArray("LlamaForSequenceClassification");
        Assert.That(ModelConfig.Load(Write(node.ToJsonString(), "two.json")).NumLabels, Is.EqualTo(2));
        node["id2label"] = new JsonObject { ["0"] = "a", ["1"] = "b", ["2"] = "c" };
        Assert.That(ModelConfig.Load(Write(node.ToJsonString(), "three.json")).ExpectedTensors().Last().Value, Is.EqualTo(new[] { 3, 64 }));
        node["num_labels"] = 0;
        Assert.That(Assert.Throws<InvalidDataException>(() => ModelConfig.Load(Write(node.ToJsonString(), "zero.json")))!.Message, Does.Contain("'num_labels'"));
    }
}
