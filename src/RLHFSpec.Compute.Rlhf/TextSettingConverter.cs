using System.Text.Json;
using System.Text.Json.Serialization;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Reads and writes a typed setting as its JSON string (so the config format stays text); a bad text throws the
/// parser's own one-line error, naming the key.
/// </summary>
public class TextSettingConverter<T>(Func<string, T> parse, Func<T, string> format) : JsonConverter<T>
{
    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String ? parse(reader.GetString()!) : throw new JsonException($"expected a string, not {reader.TokenType}");

    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WriteStringValue(format(value));
}
