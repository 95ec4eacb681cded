using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// The parts of transformers' <c>tokenizer_config.json</c> that matter here: the bos/eos/pad token names (a string or
/// an object with "content") and <c>added_tokens_decoder</c> (id → token), which is where tiktoken and SentencePiece
/// folders list their special tokens.
/// </summary>
internal static class TokenizerConfigJson
{
    public const string FileName = "tokenizer_config.json";

    public sealed record Content(string? Bos, string? Eos, string? Pad, IReadOnlyDictionary<string, int> AddedTokens);

    public static Content Read(string path)
    {
        if (!File.Exists(path)) return new Content(null, null, null, new Dictionary<string, int>());
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: JSON {root.ValueKind}, not an object");
            var added = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
                foreach (var e in dec.EnumerateObject())
                {
                    if (!int.TryParse(e.Name, out int id) || id < 0)
                        throw new InvalidDataException($"{path}: field 'added_tokens_decoder': key '{e.Name}' is not a token id");
                    if (TokenName(path, "added_tokens_decoder." + e.Name, e.Value) is not { } name)
                        throw new InvalidDataException($"{path}: field 'added_tokens_decoder.{e.Name}': no 'content'");
                    added[name] = id;
                }
            return new Content(TokenName(path, "bos_token", Get(root, "bos_token")), TokenName(path, "eos_token", Get(root, "eos_token")),
                TokenName(path, "pad_token", Get(root, "pad_token")), added);
        }
    }

    public static void Write(string path, string? bos, string? eos, string? pad, IReadOnlyDictionary<string, int> specialTokens, int modelMaxLength)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            json.WriteBoolean("add_bos_token", false);
            json.WriteBoolean("add_prefix_space", false);
            json.WriteStartObject("added_tokens_decoder");
            foreach (var (content, id) in specialTokens.OrderBy(kv => kv.Value))
            {
                json.WriteStartObject(id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                json.WriteString("content", content);
                json.WriteBoolean("lstrip", false);
                json.WriteBoolean("normalized", false);
                json.WriteBoolean("rstrip", false);
                json.WriteBoolean("single_word", false);
                json.WriteBoolean("special", true);
                json.WriteEndObject();
            }
            json.WriteEndObject();
            WriteName(json, "bos_token", bos);
            json.WriteBoolean("clean_up_tokenization_spaces", false);
            WriteName(json, "eos_token", eos);
            json.WriteNumber("model_max_length", modelMaxLength);
            WriteName(json, "pad_token", pad);
            json.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
            json.WriteNull("unk_token");
            json.WriteEndObject();
        }
        AtomicFile.Write(path, s => s.Write(buffer.WrittenSpan));
    }

    private static void WriteName(Utf8JsonWriter json, string field, string? name)
    {
        if (name is null) json.WriteNull(field); else json.WriteString(field, name);
    }

    private static JsonElement Get(JsonElement root, string field) => root.TryGetProperty(field, out var v) ? v : default;

    private static string? TokenName(string path, string field, JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Undefined or JsonValueKind.Null => null,
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => throw new InvalidDataException($"{path}: field '{field}' is neither a token string nor an object with 'content'"),
    };
}
