using RLHFSpec.Compute.Generation.Selection;
using System.Text;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Cli;
using RLHFSpec.Compute.Tests.Transformer;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// The GGUF export checked by llama.cpp itself (through LLamaSharp's CPU backend): the exported file loads, llama.cpp
/// tokenizes text as our tokenizer does, and its greedy tokens equal our <c>off</c> decoding at temperature 0 on
/// random Llama (tied, q/k permuted, GPT-2 pre-tokenizer) and Qwen2 (untied, q/k/v biases, Qwen2 pre-tokenizer)
/// checkpoints and on the default policy. The file's own structure (tensor names, types, tied head) is read back by a
/// small reader here.
/// </summary>
[TestFixture]
public sealed class GgufExportTests
{
    private static readonly string[] Texts = ["Hello world, it's 2025!", "the cat sat on the mat\n\n  twice", "x = 12345 + 678;", "don't STOP'll"];

    private static string Corpus() => string.Join(' ', Enumerable.Repeat("the cat sat on the mat and the dog ate the hat; hello world 12 + 34 = 46", 20));

    /// <summary>A random checkpoint with a trained byte-level BPE (merges, one special token) of the given split regex.</summary>
    private static string SaveRandom(string folder, string type, string pattern, int seed)
    {
        var tokenizer = TextTokenizer.FromBpe(ByteLevelBpeTrainer.Train([Corpus()], 40, ["<|endoftext|>"], pattern));
        var eos = tokenizer.SpecialTokens["<|endoftext|>"];
        tokenizer = tokenizer.WithSpecialIds(null, eos, null);
        // Four ids past the tokenizer: the GGUF vocabulary is padded to vocab_size.
        var config = TransformerTestModels.Config(type, vocab: tokenizer.VocabSize + 4) with { EosTokenIds = [eos] };
        using var weights = TransformerTestModels.Weights(config, seed);
        Checkpoint.Save(folder, config, weights.ToHostTensors(), tokenizer);
        return folder;
    }

    /// <summary>Our plain decoding (strategy off, temperature 0) through the Generator, as <c>generate</c> runs it.</summary>
    private static int[][] OursGreedy(string folder, IReadOnlyList<int[]> prompts, int maxNewTokens)
    {
        using var checkpoint = Checkpoint.Load(folder);
        using var weights = TransformerWeights.FromCheckpoint(checkpoint);
        using var model = new TransformerModel(weights, Backends.Cpu, new TransformerOptions { KvMemoryBudgetBytes = 16L << 20 });
        var generator = new Generator(model, null, new GeneratorSettings { Strategy = StrategyMode.Of(Strategy.Off), StopTokens = checkpoint.StopTokenIds() });
        var requests = GenerationRequests.For(prompts, samplesPerPrompt: 1, maxNewTokens, temperature: 0, topP: 1f, seed: 1);
        return generator.Run(requests).Results.Select(r => r.Tokens).ToArray();
    }

    private static void AssertSameGreedy(string folder, string gguf, IReadOnlyList<int[]> prompts, int maxNewTokens)
    {
        var ours = OursGreedy(folder, prompts, maxNewTokens);
        using var checkpoint = Checkpoint.Load(folder);
        using var peer = new LlamaCppGreedy(gguf, contextPerSequence: 256, maxSequences: prompts.Count);
        var theirs = peer.Generate(prompts, maxNewTokens, checkpoint.StopTokenIds());
        // How far llama.cpp's logits are from ours (first prompt's last token): the greedy choices compared must be
        // decided by gaps well above it, else equality would be luck and inequality no evidence of a bug.
        using var weights = TransformerWeights.FromCheckpoint(checkpoint);
        using var model = TransformerTestModels.NewModel(weights, Backends.Cpu);
        var ourLogits = TransformerTestModels.Prefill(model, 1, prompts[0])[^1];
        var peerLogits = peer.PromptLogits(prompts[0]);
        double difference = ourLogits.Zip(peerLogits, (a, b) => Math.Abs((double)a - b)).Max();
        TestContext.Out.WriteLine($"smallest top-2 logit gap in llama.cpp's steps: {peer.SmallestMargin:G3}; largest logit difference from ours: {difference:G3}");
        Assert.That(peer.SmallestMargin, Is.GreaterThan(10 * difference), "greedy choices are not near-ties at the precision the two runtimes agree to");
        for (int s = 0; s < prompts.Count; s++)
        {
            TestContext.Out.WriteLine($"prompt {s}: ours [{string.Join(' ', ours[s])}]");
            Assert.That(theirs[s], Is.EqualTo(ours[s]), $"prompt {s}: llama.cpp's greedy tokens");
        }
        Assert.That(ours.SelectMany(t => t).Distinct().Count(), Is.GreaterThanOrEqualTo(3), "non-degenerate outputs");
        Assert.That(ours.Select(t => string.Join(' ', t)).Distinct().Count(), Is.GreaterThan(1), "outputs depend on the prompt");
    }

    [TestCase("llama", BpeModelData.Gpt2Pattern, "gpt-2")]
    [TestCase("qwen2", BpeModelData.Qwen2Pattern, "qwen2")]
    [TestCase("qwen2", TextTokenizer.Cl100kPattern, "llama-bpe")]
    public void Random_checkpoint_exports_and_llama_cpp_decodes_our_greedy_tokens(string type, string pattern, string pre)
    {
        using var dir = new FormatsTestFolder();
        string folder = SaveRandom(Path.Combine(dir.Path, "model"), type, pattern, seed: 7);
        string gguf = Path.Combine(dir.Path, "model.gguf");
        var summary = GgufExporter.Export(folder, gguf);
        Assert.That(summary.Architecture, Is.EqualTo(type));
        Assert.That(summary.PreTokenizer, Is.EqualTo(pre));
        Assert.That(Directory.GetFiles(dir.Path), Is.EqualTo(new[] { gguf }), "no temporary file left");

        var file = GgufTestReader.Read(gguf);
        var config = ModelConfig.Load(Path.Combine(folder, ModelConfig.FileName));
        Assert.That(file.Tensors.ContainsKey("output.weight"), Is.EqualTo(!config.TieWordEmbeddings), "output.weight only for an untied head");
        Assert.That(file.Tensors.ContainsKey("blk.0.attn_q.bias"), Is.EqualTo(type == "qwen2"));
        Assert.That(file.Tensors["blk.1.ffn_gate.weight"].Dims, Is.EqualTo(new long[] { config.HiddenSize, config.IntermediateSize }), "dims innermost first");
        Assert.That(file.Tensors.Values.All(t => t.Type == 0), "all F32");

        using var checkpoint = Checkpoint.Load(folder);
        using var peer = new LlamaCppGreedy(gguf);
        Assert.That(peer.Metadata["general.architecture"], Is.EqualTo(type));
        Assert.That(peer.Metadata["tokenizer.ggml.pre"], Is.EqualTo(pre));
        foreach (var text in Texts)
            Assert.That(peer.Tokenize(text), Is.EqualTo(checkpoint.Tokenizer.Encode(text)), $"llama.cpp tokenizes '{text}' as we do");

        var prompts = new[] { "the cat sat", "hello world 12", "dog" }.Select(checkpoint.Tokenizer.Encode).ToArray();
        AssertSameGreedy(folder, gguf, prompts, maxNewTokens: 40);
    }

    [Test]
    public void Llama_permutation_moves_rotary_pairs_to_adjacent_rows()
    {
        // 2 heads of size 4, 1 column: HF rows per head [a0 a1 b0 b1] (halves) → ggml [a0 b0 a1 b1] (pairs).
        float[] rows = [0, 1, 2, 3, 10, 11, 12, 13];
        Assert.That(GgufExporter.PermuteRotaryRows(rows, [8, 1], 2), Is.EqualTo(new float[] { 0, 2, 1, 3, 10, 12, 11, 13 }));
        Assert.That(GgufExporter.PermuteRotaryRows(rows, [8], 2), Is.EqualTo(new float[] { 0, 2, 1, 3, 10, 12, 11, 13 }), "a bias too");
    }

    [Test]
    public void F16_export_stores_matrices_as_half_and_llama_cpp_logits_stay_close_to_ours()
    {
        using var dir = new FormatsTestFolder();
        string folder = SaveRandom(Path.Combine(dir.Path, "model"), "qwen2", BpeModelData.Qwen2Pattern, seed: 11);
        string f32 = Path.Combine(dir.Path, "f32.gguf"), f16 = Path.Combine(dir.Path, "f16.gguf");
        GgufExporter.Export(folder, f32);
        GgufExporter.Export(folder, f16, TensorDType.F16);
        var file = GgufTestReader.Read(f16);
        Assert.That(file.Tensors["blk.0.attn_q.weight"].Type, Is.EqualTo(1u), "2-D weights F16");
        Assert.That(file.Tensors["token_embd.weight"].Type, Is.EqualTo(1u));
        Assert.That(file.Tensors["blk.0.attn_q.bias"].Type, Is.EqualTo(0u), "biases stay F32");
        Assert.That(file.Tensors["output_norm.weight"].Type, Is.EqualTo(0u), "norms stay F32");
        Assert.That(new FileInfo(f16).Length, Is.LessThan(new FileInfo(f32).Length * 0.6));

        using var checkpoint = Checkpoint.Load(folder);
        var prompt = checkpoint.Tokenizer.Encode("the cat sat on the");
        using var weights = TransformerWeights.FromCheckpoint(checkpoint);
        using var model = TransformerTestModels.NewModel(weights, Backends.Cpu);
        var ours = TransformerTestModels.Prefill(model, 1, prompt)[^1];
        using var exact = new LlamaCppGreedy(f32);
        using var half = new LlamaCppGreedy(f16);
        var exactLogits = exact.PromptLogits(prompt);
        var halfLogits = half.PromptLogits(prompt);
        double f32Error = TransformerTestModels.Error(exactLogits, ours.Select(v => (double)v).ToArray());
        double f16Error = TransformerTestModels.Error(halfLogits, ours.Select(v => (double)v).ToArray());
        TestContext.Out.WriteLine($"relative logit error vs ours: f32 export {f32Error:G3}, f16 export {f16Error:G3}");
        Assert.That(f32Error, Is.LessThan(1e-4), "F32 export: llama.cpp's logits are ours");
        Assert.That(f16Error, Is.LessThan(2e-2), "F16 export: close (weights rounded to half)");
        Assert.That(f16Error, Is.GreaterThan(f32Error), "the F16 file really holds rounded weights");
    }

    [Test]
    public void Default_policy_exports_and_llama_cpp_decodes_our_greedy_tokens()
    {
        using var dir = new FormatsTestFolder();
        string policy;
        if (DefaultModels.Exists(DefaultModels.Folder)) policy = DefaultModels.PolicyFolder(DefaultModels.Folder);
        else
        {
            Pretrainer.Run(dir.Path, new PretrainOptions { Steps = 12, EvalPrompts = 0, Threads = 2, PolicyOnly = true });
            policy = DefaultModels.PolicyFolder(dir.Path);
        }
        TestContext.Out.WriteLine($"policy: {policy}");
        string gguf = Path.Combine(dir.Path, "policy.gguf");
        var summary = GgufExporter.Export(policy, gguf);
        Assert.That(summary.PreTokenizer, Is.EqualTo("qwen2"));
        Assert.That(summary.VocabularySize, Is.EqualTo(16));

        using var checkpoint = Checkpoint.Load(policy);
        var task = new ArithmeticTask(20260518);
        var texts = Enumerable.Range(0, 4).Select(_ => task.Next().Prompt).Append(ArithmeticTask.Make(Enumerable.Range(0, 30).Select(i => i % 10).ToArray()).Prompt).ToArray();
        using (var peer = new LlamaCppGreedy(gguf))
            foreach (var text in texts)
                Assert.That(peer.Tokenize(text), Is.EqualTo(checkpoint.Tokenizer.Encode(text)), $"llama.cpp tokenizes '{text}' as we do");
        AssertSameGreedy(policy, gguf, texts.Select(checkpoint.Tokenizer.Encode).ToArray(), maxNewTokens: 60);
    }

    [Test]
    public void Export_cli_writes_the_file_and_refuses_bad_input_in_one_line()
    {
        using var dir = new FormatsTestFolder();
        string model = CliRunner.SaveRandomModel(Path.Combine(dir.Path, "m"), hidden: 16, heads: 2, kvHeads: 1, intermediate: 24, maxPositions: 64);
        string gguf = Path.Combine(dir.Path, "out", "m.gguf");
        var (exit, stdout, stderr) = CliRunner.Run(dir.Path, "export", "--format", "gguf", "--dtype", "f16", "--model", model, "--out", gguf);
        Assert.That(exit, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("architecture llama"));
        Assert.That(GgufTestReader.Read(gguf).Tensors["blk.0.ffn_up.weight"].Type, Is.EqualTo(1u));

        var bad = new (string[] Args, string Names)[]
        {
            (["export", "--format", "onnx", "--model", model, "--out", gguf], "--format"),
            (["export", "--format", "gguf", "--dtype", "q4", "--model", model, "--out", gguf], "--dtype"),
            (["export", "--format", "gguf", "--model", Path.Combine(dir.Path, "none"), "--out", gguf], "--model"),
            (["export", "--format", "gguf", "--model", model, "--out", dir.Path], "--out"),
        };
        foreach (var (args, names) in bad)
        {
            var (e, _, err) = CliRunner.Run(dir.Path, args);
            Assert.That(e, Is.EqualTo(2), string.Join(' ', args));
            Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), err);
            Assert.That(err, Does.Contain(names));
        }
        // A checkpoint the export cannot represent: a tokenizer split regex llama.cpp has no pre type for.
        File.WriteAllText(Path.Combine(model, "tokenizer.json"), File.ReadAllText(Path.Combine(model, "tokenizer.json")).Replace("\\\\p{N}|", "\\\\p{N}{1,2}|", StringComparison.Ordinal));
        var (e2, _, err2) = CliRunner.Run(dir.Path, "export", "--format", "gguf", "--model", model, "--out", Path.Combine(dir.Path, "x.gguf"));
        Assert.That(e2, Is.EqualTo(2), err2);
        Assert.That(err2, Does.Contain("tokenizer.json").And.Contain("pre-tokenizer"));
        Assert.That(File.Exists(Path.Combine(dir.Path, "x.gguf")), Is.False, "nothing written");
    }
}

/// <summary>Reads a GGUF file's header, metadata keys and tensor descriptors (enough to check what the exporter wrote).</summary>
internal sealed record GgufTestReader(uint Version, IReadOnlyList<string> Keys, IReadOnlyDictionary<string, (long[] Dims, uint Type, ulong Offset)> Tensors)
{
    public static GgufTestReader Read(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path), Encoding.UTF8);
        Assert.That(Encoding.ASCII.GetString(r.ReadBytes(4)), Is.EqualTo("GGUF"));
        uint version = r.ReadUInt32();
        long tensors = (long)r.ReadUInt64(), kvs = (long)r.ReadUInt64();
        var keys = new List<string>();
        for (long i = 0; i < kvs; i++)
        {
            keys.Add(ReadString(r));
            SkipValue(r, r.ReadUInt32());
        }
        var infos = new Dictionary<string, (long[], uint, ulong)>();
        for (long i = 0; i < tensors; i++)
        {
            string name = ReadString(r);
            var dims = new long[r.ReadUInt32()];
            for (int d = 0; d < dims.Length; d++) dims[d] = (long)r.ReadUInt64();
            infos.Add(name, (dims, r.ReadUInt32(), r.ReadUInt64()));
        }
        return new GgufTestReader(version, keys, infos);
    }

    private static string ReadString(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes((int)r.ReadUInt64()));

    private static void SkipValue(BinaryReader r, uint type)
    {
        switch (type)
        {
            case 0 or 1 or 7: r.ReadByte(); break;
            case 2 or 3: r.ReadUInt16(); break;
            case 4 or 5 or 6: r.ReadUInt32(); break;
            case 10 or 11 or 12: r.ReadUInt64(); break;
            case 8: ReadString(r); break;
            case 9:
                uint inner = r.ReadUInt32();
                ulong count = r.ReadUInt64();
                for (ulong i = 0; i < count; i++) SkipValue(r, inner);
                break;
            default: throw new InvalidDataException($"GGUF value type {type}");
        }
    }
}
