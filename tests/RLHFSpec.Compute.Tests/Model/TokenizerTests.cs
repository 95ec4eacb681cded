using System.Text.Json.Nodes;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>Tokenizers: our trained byte-level BPE saved and reloaded in HF layout, a hand-written HF tokenizer.json
/// and vocab.json/merges.txt whose ids are worked out by hand, a tiny tiktoken file, and bad tokenizer files.</summary>
public class TokenizerTests
{
    private FormatsTestFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new FormatsTestFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    internal static IEnumerable<string> ArithmeticCorpus()
    {
        var rng = new Random(3);
        for (int i = 0; i < 300; i++)
        {
            int a = rng.Next(1000), b = rng.Next(1000);
            yield return $"Q: what is {a} + {b}? A: {a + b}";
            yield return $"sort: {rng.Next(100)} {rng.Next(100)} {rng.Next(100)} -> sorted";
        }
    }

    [Test]
    public void EncodeChecked_names_a_character_the_vocabulary_would_drop()
    {
        var arithmetic = RLHFSpec.Compute.Model.Pretraining.ArithmeticTokenizer.Create();
        Assert.That(arithmetic.EncodeChecked("12+3=", "p"), Is.EqualTo(arithmetic.Encode("12+3=")));
        Assert.That(arithmetic.Encode("3 + 4 ="), Has.Length.EqualTo(4), "plain Encode drops the spaces");
        var e = Assert.Throws<FormatException>(() => arithmetic.EncodeChecked("3 + 4 =", "prompt 7"));
        Assert.That(e!.Message, Is.EqualTo("prompt 7: character ' ' (U+0020) at offset 1 is not in the tokenizer's vocabulary (it would be dropped)"));
        Assert.Throws<FormatException>(() => arithmetic.EncodeChecked("1+2=x", "p"));
        // A byte-level vocabulary has every byte: any text round-trips.
        var bytes = TrainSmall();
        const string text = "héllo wörld, 12 + 7 = 19 ✓\n\ttabs";
        Assert.That(bytes.Decode(bytes.EncodeChecked(text, "p")), Is.EqualTo(text));
    }

    internal static TextTokenizer TrainSmall(int merges = 40)
    {
        var tok = TextTokenizer.FromBpe(ByteLevelBpeTrainer.Train(ArithmeticCorpus(), merges, new[] { "<|endoftext|>", "<|pad|>" }));
        return tok.WithSpecialIds(bos: null, eos: tok.SpecialTokens["<|endoftext|>"], pad: tok.SpecialTokens["<|pad|>"]);
    }

    private static readonly string[] Texts =
    {
        "Q: what is 12 + 345? A: 357",
        "sort: 5 3 9 -> sorted",
        "  spaces\tand\nnewlines\r\n",
        "héllo wörld — 你好 🙂",
        "",
        "what is<|endoftext|>sort<|pad|>",
    };

    [Test]
    public void TrainedTokenizerRoundTripsAndMerges()
    {
        var tok = TrainSmall();
        // The corpus has fewer than 40 pairs seen twice once words are merged whole (digits split singly).
        int merges = tok.Bpe!.Merges.Count;
        Assert.That(merges, Is.InRange(10, 40));
        Assert.That(tok.VocabSize, Is.EqualTo(256 + merges + 2));
        Assert.That(tok.SpecialTokens["<|pad|>"], Is.EqualTo(256 + merges + 1));
        Assert.That(TrainSmall(5).Bpe!.Merges, Has.Count.EqualTo(5));
        foreach (var text in Texts) Assert.That(tok.Decode(tok.Encode(text)), Is.EqualTo(text), text);
        // Frequent words are merged: "sort" and " what" are fewer tokens than bytes.
        Assert.That(tok.Encode("what is").Length, Is.LessThan("what is".Length));
        var ids = tok.Encode("is<|endoftext|>");
        Assert.That(ids[^1], Is.EqualTo(tok.SpecialTokens["<|endoftext|>"]));
        Assert.That(tok.Decode(ids, skipSpecialTokens: true), Is.EqualTo("is"));
        Assert.Throws<ArgumentException>(() => tok.Decode(new[] { tok.VocabSize }));
    }

    [Test]
    public void SavedTokenizerLoadsBackIdentically()
    {
        var tok = TrainSmall();
        tok.Save(_folder.Path);
        foreach (var f in new[] { "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json" })
            Assert.That(File.Exists(_folder.File(f)), f);
        var back = TextTokenizer.Load(_folder.Path);
        Assert.That(back.Fingerprint, Is.EqualTo(tok.Fingerprint));
        Assert.That((back.VocabSize, back.EosId, back.PadId, back.BosId), Is.EqualTo((tok.VocabSize, tok.EosId, tok.PadId, (int?)null)));
        foreach (var text in Texts) Assert.That(back.Encode(text), Is.EqualTo(tok.Encode(text)), text);

        // The vocab.json + merges.txt pair alone gives the same ids (specials from tokenizer_config.json).
        File.Delete(_folder.File("tokenizer.json"));
        var slow = TextTokenizer.Load(_folder.Path);
        foreach (var text in Texts) Assert.That(slow.Encode(text), Is.EqualTo(tok.Encode(text)), text);

        var json = JsonNode.Parse(File.ReadAllText(_folder.File("tokenizer_config.json")))!;
        Assert.That(json["eos_token"]!.GetValue<string>(), Is.EqualTo("<|endoftext|>"));
        Assert.That(json["tokenizer_class"]!.GetValue<string>(), Is.EqualTo("PreTrainedTokenizerFast"));
    }

    /// <summary>A tokenizer.json as HF tokenizers writes it (Qwen2-like Split + ByteLevel, merges as pairs): the full
    /// byte alphabet plus three merges t+h, th+e, Ġ+the, and one special token.</summary>
    private string WriteHandMadeTokenizerJson(bool mergesAsPairs)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.Encode((byte)b).ToString()] = b;
        vocab["th"] = 256;
        vocab["the"] = 257;
        vocab["Ġthe"] = 258;
        var merges = new JsonArray();
        foreach (var (l, r) in new[] { ("t", "h"), ("th", "e"), ("Ġ", "the") })
            merges.Add(mergesAsPairs ? new JsonArray(l, r) : JsonValue.Create(l + " " + r));
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 259, ["content"] = "<|im_end|>", ["special"] = true }),
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = BpeModelData.Qwen2Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = merges },
        };
        string path = _folder.File("tokenizer.json");
        File.WriteAllText(path, root.ToJsonString());
        File.WriteAllText(_folder.File("tokenizer_config.json"), "{\"eos_token\": {\"content\": \"<|im_end|>\"}, \"pad_token\": null}");
        return path;
    }

    [Test]
    public void HandWrittenTokenizerJsonGivesKnownIds([Values] bool mergesAsPairs)
    {
        WriteHandMadeTokenizerJson(mergesAsPairs);
        var tok = TextTokenizer.Load(_folder.Path);
        // "the the then": pieces "the", " the", " then" → the | Ġthe | Ġthe + n   ('n' is byte 110)
        Assert.That(tok.Encode("the the then"), Is.EqualTo(new[] { 257, 258, 258, 110 }));
        Assert.That(tok.Encode("th<|im_end|>"), Is.EqualTo(new[] { 256, 259 }));
        Assert.That(tok.Encode("é"), Is.EqualTo(new[] { 0xC3, 0xA9 }), "UTF-8 bytes, no merges");
        Assert.That(tok.EosId, Is.EqualTo(259));
        Assert.That(tok.VocabSize, Is.EqualTo(260));
        Assert.That(tok.Decode(new[] { 257, 258, 259 }), Is.EqualTo("the the<|im_end|>"));
    }

    [Test]
    public void VocabAndMergesFilesGiveKnownIds()
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteLevelAlphabet.Encode((byte)b).ToString()] = b;
        vocab["Ġa"] = 256;
        File.WriteAllText(_folder.File("vocab.json"), vocab.ToJsonString());
        File.WriteAllText(_folder.File("merges.txt"), "#version: 0.2\nĠ a\n");
        var tok = TextTokenizer.Load(_folder.Path);
        Assert.That(tok.Encode("a a"), Is.EqualTo(new[] { 97, 256 }));
    }

    [Test]
    public void TiktokenFileGivesKnownIds()
    {
        // ranks: a=0, b=1, ab=2, " "=3; "ab ab" splits into "ab", " ab" → [ab] [" ", ab]
        string B64(string s) => Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(s));
        string path = _folder.File("tiny.tiktoken");
        File.WriteAllText(path, $"{B64("a")} 0\n{B64("b")} 1\n{B64("ab")} 2\n{B64(" ")} 3\n");
        var tok = TextTokenizer.LoadTiktoken(path, new Dictionary<string, int> { ["<|end|>"] = 4 });
        Assert.That(tok.Encode("ab ab"), Is.EqualTo(new[] { 2, 3, 2 }));
        Assert.That(tok.Encode("ba<|end|>"), Is.EqualTo(new[] { 1, 0, 4 }));
        Assert.That(tok.Decode(new[] { 2, 3, 2, 4 }), Is.EqualTo("ab ab<|end|>"));
        Assert.That(tok.VocabSize, Is.EqualTo(5));
        // Found by Load in a folder, special tokens from tokenizer_config.json's added_tokens_decoder.
        File.WriteAllText(_folder.File("tokenizer_config.json"),
            "{\"added_tokens_decoder\": {\"4\": {\"content\": \"<|end|>\", \"special\": true}}, \"eos_token\": \"<|end|>\"}");
        var loaded = TextTokenizer.Load(_folder.Path);
        Assert.That(loaded.Kind, Is.EqualTo("tiktoken"));
        Assert.That(loaded.EosId, Is.EqualTo(4));
        Assert.That(loaded.Fingerprint, Is.EqualTo(tok.Fingerprint));
    }

    [Test]
    public void BadTokenizerFilesNameFileAndField()
    {
        string path = WriteHandMadeTokenizerJson(false);
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        root["model"]!["merges"]!.AsArray().Add("x qq");
        File.WriteAllText(path, root.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(_folder.Path));
        Assert.That(e!.Message, Does.StartWith(path + ": field 'model.merges'").And.Contain("'x qq'"));

        root["model"]!["merges"]!.AsArray().RemoveAt(3);
        root["model"]!["type"] = "WordPiece";
        File.WriteAllText(path, root.ToJsonString());
        e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(_folder.Path));
        Assert.That(e!.Message, Does.StartWith(path + ": field 'model.type'"));

        File.WriteAllText(path, "{ not json");
        Assert.That(Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(_folder.Path))!.Message, Does.StartWith(path + ": not valid JSON"));

        File.Delete(path);
        Assert.Throws<FileNotFoundException>(() => TextTokenizer.Load(_folder.Path));
    }

    [Test]
    public void EosNotInVocabularyIsNamed()
    {
        WriteHandMadeTokenizerJson(false);
        string config = _folder.File("tokenizer_config.json");
        File.WriteAllText(config, "{\"eos_token\": \"<|nope|>\"}");
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(_folder.Path));
        Assert.That(e!.Message, Does.StartWith(config + ": field 'eos_token'"));
    }
}
