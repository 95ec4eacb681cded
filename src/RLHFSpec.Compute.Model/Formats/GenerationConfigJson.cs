using System.Buffers;
using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>transformers' <c>generation_config.json</c>: the special token ids generation stops and pads with. Written
/// from the model config; when read, its ids are checked against the vocabulary.</summary>
internal static class GenerationConfigJson
{
    public const string FileName = "generation_config.json";

    public static void Write(string path, ModelConfig config, int? padId)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            if (config.BosTokenId is { } bos) json.WriteNumber("bos_token_id", bos);
            if (config.EosTokenIds.Count == 1) json.WriteNumber("eos_token_id", config.EosTokenIds[0]);
            else if (config.EosTokenIds.Count > 1)
            {
                json.WriteStartArray("eos_token_id");
                foreach (var e in config.EosTokenIds) json.WriteNumberValue(e);
                json.WriteEndArray();
            }
            if ((config.PadTokenId ?? padId) is { } pad) json.WriteNumber("pad_token_id", pad);
            json.WriteEndObject();
        }
        AtomicFile.Write(path, s => s.Write(buffer.WrittenSpan));
    }

    /// <summary>Checks an existing file: valid JSON object, token ids (int or list) inside the vocabulary.</summary>
    public static void Check(string path, int vocabSize)
    {
        if (!File.Exists(path)) return;
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
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: JSON {doc.RootElement.ValueKind}, not an object");
            foreach (var field in new[] { "bos_token_id", "eos_token_id", "pad_token_id" })
            {
                if (!doc.RootElement.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) continue;
                var items = v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : new List<JsonElement> { v };
                foreach (var item in items)
                    if (!item.TryGetInt32(out int id) || id < 0 || id >= vocabSize)
                        throw new InvalidDataException($"{path}: field '{field}': {item.GetRawText()} is not a token id below vocab_size {vocabSize}");
            }
        }
    }
}
