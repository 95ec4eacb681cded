using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// Reads and writes the Hugging Face <c>tokenizers</c> formats of a byte-level BPE: <c>tokenizer.json</c> (model type
/// BPE with a ByteLevel pre-tokenizer or decoder, optionally preceded by a Split regex as Qwen2 and Llama 3 have), and
/// the older <c>vocab.json</c> + <c>merges.txt</c> pair. Other models (WordPiece, Unigram, SentencePiece-style BPE with
/// Metaspace/byte_fallback) are refused with a message naming the file and field.
/// </summary>
public static class TokenizerJson
{
    public const string FileName = "tokenizer.json";
    public const string VocabFileName = "vocab.json";
    public const string MergesFileName = "merges.txt";

    /// <summary>Reads a tokenizer.json holding a byte-level BPE.</summary>
    public static BpeModelData Read(string path)
    {
        using var doc = Parse(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw Bad(path, "(root)", $"is {root.ValueKind}, not an object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw Bad(path, "model", "missing or not an object");
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
        if (type != "BPE") throw Bad(path, "model.type", $"'{type}' is not supported (BPE only; use tokenizer.model for SentencePiece)");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw Bad(path, "model.byte_fallback", "SentencePiece-style BPE is not supported here (use tokenizer.model)");
        bool byteLevel = Mentions(root, "pre_tokenizer", "ByteLevel") || Mentions(root, "decoder", "ByteLevel");
        if (!byteLevel) throw Bad(path, "pre_tokenizer", "no ByteLevel pre-tokenizer or decoder: only byte-level BPE is supported");

        var vocab = ReadVocab(path, "model.vocab", model.TryGetProperty("vocab", out var v) ? v : default);
        var merges = new List<(string, string)>();
        if (!model.TryGetProperty("merges", out var m) || m.ValueKind != JsonValueKind.Array) throw Bad(path, "model.merges", "missing or not a list");
        int index = 0;
        foreach (var merge in m.EnumerateArray())
        {
            (string, string) pair;
            if (merge.ValueKind == JsonValueKind.String) pair = SplitMerge(path, "model.merges", index, merge.GetString()!);
            else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2
                     && merge[0].ValueKind == JsonValueKind.String && merge[1].ValueKind == JsonValueKind.String)
                pair = (merge[0].GetString()!, merge[1].GetString()!);
            else throw Bad(path, "model.merges", $"entry {index} is neither \"a b\" nor [\"a\", \"b\"]");
            CheckMerge(path, "model.merges", index, pair, vocab);
            merges.Add(pair);
            index++;
        }
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var a in added.EnumerateArray())
            {
                if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("id", out var id) || !id.TryGetInt32(out int idValue)
                    || !a.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                    throw Bad(path, "added_tokens", $"entry {i} lacks an integer 'id' or a string 'content'");
                special[c.GetString()!] = idValue;
                i++;
            }
        }
        bool nfc = root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object
            && norm.TryGetProperty("type", out var nt) && nt.GetString() == "NFC";
        if (norm.ValueKind == JsonValueKind.Object && !nfc)
            throw Bad(path, "normalizer", $"{norm.GetRawText()} is not supported (null or NFC)");
        return new BpeModelData(vocab, merges, special, SplitPatternOf(path, root), nfc);
    }

    /// <summary>Reads the vocab.json + merges.txt pair (GPT-2 layout; regex GPT-2's).</summary>
    public static BpeModelData ReadVocabMerges(string vocabPath, string mergesPath, IReadOnlyDictionary<string, int>? specialTokens = null)
    {
        Dictionary<string, int> vocab;
        using (var doc = Parse(vocabPath)) vocab = ReadVocab(vocabPath, "(root)", doc.RootElement);
        if (!File.Exists(mergesPath)) throw new FileNotFoundException($"{mergesPath}: merges file not found", mergesPath);
        var merges = new List<(string, string)>();
        int line = 0;
        foreach (var text in File.ReadLines(mergesPath))
        {
            line++;
            if (text.Length == 0 || (line == 1 && text.StartsWith("#version", StringComparison.Ordinal))) continue;
            var pair = SplitMerge(mergesPath, $"line {line}", merges.Count, text);
            CheckMerge(mergesPath, $"line {line}", merges.Count, pair, vocab);
            merges.Add(pair);
        }
        var special = specialTokens?.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal) ?? new Dictionary<string, int>(StringComparer.Ordinal);
        return new BpeModelData(vocab, merges, special, BpeModelData.Gpt2Pattern);
    }

    /// <summary>Writes tokenizer.json in the layout the <c>tokenizers</c> library writes for a byte-level BPE with a
    /// Split pre-tokenizer (as Qwen2's): readable by transformers' PreTrainedTokenizerFast and by this class.</summary>
    public static void Write(string path, BpeModelData data)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteString("version", "1.0");
            json.WriteNull("truncation");
            json.WriteNull("padding");
            json.WriteStartArray("added_tokens");
            foreach (var (content, id) in data.SpecialTokens.OrderBy(kv => kv.Value))
            {
                json.WriteStartObject();
                json.WriteNumber("id", id);
                json.WriteString("content", content);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            if (data.NormalizeNfc)
            {
                json.WriteStartObject("normalizer");
                json.WriteString("type", "NFC");
                json.WriteEndObject();
            }
            else json.WriteNull("normalizer");
            json.WriteStartObject("pre_tokenizer");
            json.WriteString("type", "Sequence");
            json.WriteStartArray("pretokenizers");
            json.WriteStartObject();
            json.WriteString("type", "Split");
            json.WriteStartObject("pattern");
            json.WriteString("Regex", data.SplitPattern);
            json.WriteEndObject();
            json.WriteString("behavior", "Isolated");
            json.WriteBoolean("invert", false);
            json.WriteEndObject();
            WriteByteLevel(json, null);
            json.WriteEndArray();
            json.WriteEndObject();
            WriteByteLevel(json, "post_processor");
            WriteByteLevel(json, "decoder");
            json.WriteStartObject("model");
            json.WriteString("type", "BPE");
            json.WriteNull("dropout");
            json.WriteNull("unk_token");
            json.WriteNull("continuing_subword_prefix");
            json.WriteNull("end_of_word_suffix");
            json.WriteBoolean("fuse_unk", false);
            json.WriteBoolean("byte_fallback", false);
            WriteVocab(json, "vocab", data.Vocabulary);
            // "a b" strings: readable by every tokenizers version (the [a, b] form needs 0.20+); byte-level tokens
            // never contain a space, so the split is unambiguous.
            json.WriteStartArray("merges");
            foreach (var (l, r) in data.Merges) json.WriteStringValue(l + " " + r);
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndObject();
        }
        AtomicFile.Write(path, s => s.Write(buffer.WrittenSpan));
    }

    /// <summary>Writes vocab.json and merges.txt (the slow GPT-2 tokenizer's files) into a folder.</summary>
    public static void WriteVocabMerges(string folder, BpeModelData data)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            WriteVocab(json, null, data.Vocabulary);
        }
        AtomicFile.Write(Path.Combine(folder, VocabFileName), s => s.Write(buffer.WrittenSpan));
        var merges = new StringBuilder("#version: 0.2\n");
        foreach (var (l, r) in data.Merges) merges.Append(l).Append(' ').Append(r).Append('\n');
        AtomicFile.WriteText(Path.Combine(folder, MergesFileName), merges.ToString());
    }

    private static void WriteVocab(Utf8JsonWriter json, string? name, IReadOnlyDictionary<string, int> vocab)
    {
        if (name is null) json.WriteStartObject(); else json.WriteStartObject(name);
        foreach (var (token, id) in vocab.OrderBy(kv => kv.Value)) json.WriteNumber(token, id);
        json.WriteEndObject();
    }

    private static void WriteByteLevel(Utf8JsonWriter json, string? name)
    {
        if (name is null) json.WriteStartObject(); else json.WriteStartObject(name);
        json.WriteString("type", "ByteLevel");
        json.WriteBoolean("add_prefix_space", false);
        json.WriteBoolean("trim_offsets", false);
        json.WriteBoolean("use_regex", false);
        json.WriteEndObject();
    }

    private static JsonDocument Parse(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: tokenizer file not found", path);
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    private static InvalidDataException Bad(string path, string field, string what) => new($"{path}: field '{field}': {what}");

    private static Dictionary<string, int> ReadVocab(string path, string field, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Object) throw Bad(path, field, "missing or not an object of token → id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var ids = new HashSet<int>();
        foreach (var e in v.EnumerateObject())
        {
            if (!e.Value.TryGetInt32(out int id) || id < 0) throw Bad(path, field, $"token '{e.Name}' has id {e.Value.GetRawText()}, not a non-negative integer");
            if (!ids.Add(id)) throw Bad(path, field, $"id {id} is used twice (again by token '{e.Name}')");
            if (!vocab.TryAdd(e.Name, id)) throw Bad(path, field, $"token '{e.Name}' appears twice");
        }
        return vocab;
    }

    private static (string, string) SplitMerge(string path, string field, int index, string text)
    {
        int space = text.IndexOf(' ');
        if (space <= 0 || space == text.Length - 1 || text.IndexOf(' ', space + 1) >= 0)
            throw Bad(path, field, $"merge {index} '{text}' is not two tokens separated by one space");
        return (text[..space], text[(space + 1)..]);
    }

    private static void CheckMerge(string path, string field, int index, (string Left, string Right) pair, Dictionary<string, int> vocab)
    {
        if (!vocab.ContainsKey(pair.Left) || !vocab.ContainsKey(pair.Right) || !vocab.ContainsKey(pair.Left + pair.Right))
            throw Bad(path, field, $"merge {index} '{pair.Left} {pair.Right}' uses or makes a token not in the vocabulary");
    }

    private static bool Mentions(JsonElement root, string field, string type)
    {
        if (!root.TryGetProperty(field, out var e) || e.ValueKind != JsonValueKind.Object) return false;
        if (e.TryGetProperty("type", out var t) && t.GetString() == type) return true;
        foreach (var listName in new[] { "pretokenizers", "decoders" })
            if (e.TryGetProperty(listName, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var item in list.EnumerateArray())
                    if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("type", out var it) && it.GetString() == type) return true;
        return false;
    }

    /// <summary>The regex that splits text before BPE: a Split pre-tokenizer's pattern, else GPT-2's (ByteLevel with
    /// use_regex, its default).</summary>
    private static string SplitPatternOf(string path, JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) return BpeModelData.Gpt2Pattern;
        var items = pre.TryGetProperty("pretokenizers", out var list) && list.ValueKind == JsonValueKind.Array
            ? list.EnumerateArray().ToList() : new List<JsonElement> { pre };
        string? pattern = null;
        foreach (var item in items)
        {
            string type = item.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
            if (type == "Split")
            {
                if (pattern is not null) throw Bad(path, "pre_tokenizer", "more than one Split is not supported");
                if (!item.TryGetProperty("pattern", out var p)) throw Bad(path, "pre_tokenizer", "Split without a pattern");
                if (p.TryGetProperty("Regex", out var r) && r.ValueKind == JsonValueKind.String) pattern = r.GetString()!;
                else if (p.TryGetProperty("String", out var s) && s.ValueKind == JsonValueKind.String) pattern = System.Text.RegularExpressions.Regex.Escape(s.GetString()!);
                else throw Bad(path, "pre_tokenizer", "Split pattern is neither Regex nor String");
            }
            else if (type == "ByteLevel")
            {
                if (item.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
                    throw Bad(path, "pre_tokenizer", "ByteLevel add_prefix_space=true is not supported");
                bool useRegex = !item.TryGetProperty("use_regex", out var u) || u.ValueKind != JsonValueKind.False;
                if (useRegex && pattern is null) pattern = BpeModelData.Gpt2Pattern;
            }
            else
                throw Bad(path, "pre_tokenizer", $"'{type}' is not supported (ByteLevel, Split)");
        }
        return pattern ?? BpeModelData.Gpt2Pattern;
    }
}
