using System.Text;
using System.Text.Json;
using Parquet;

namespace RLHFSpec.Compute.Generation.IO;

/// <summary>
/// Prompts from a file: JSONL (one JSON object per line with a string field <c>prompt</c>; blank lines skipped) or
/// Parquet (a string column <c>prompt</c>), chosen by extension (<c>.parquet</c>) or content. Every problem is an
/// <see cref="InvalidDataException"/> naming the file and the line or column.
/// </summary>
public static class PromptFile
{
    public static IReadOnlyList<string> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException(Directory.Exists(path) ? $"prompts file '{path}' is a folder, not a file" : $"prompts file '{path}' does not exist", path);
        var prompts = IsParquet(path) ? ReadParquet(path) : ReadJsonl(path);
        if (prompts.Count == 0) throw new InvalidDataException($"prompts file '{path}': no prompts");
        return prompts;
    }

    private static bool IsParquet(string path)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase)) return true;
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return f.Read(magic) == 4 && magic.SequenceEqual("PAR1"u8);
    }

    private static List<string> ReadJsonl(string path)
    {
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        var prompts = new List<string>();
        // Lines are split on the bytes, then decoded one by one, so a bad byte is reported on its own line (a decoding
        // reader fails on the buffer that holds it, lines ahead of the line it has handed out).
        ReadOnlySpan<byte> rest = File.ReadAllBytes(path);
        if (rest.StartsWith("\uFEFF"u8)) rest = rest[3..];
        int lineNumber = 0;
        while (!rest.IsEmpty)
        {
            int end = rest.IndexOf((byte)'\n');
            var bytes = end < 0 ? rest : rest[..end];
            rest = end < 0 ? default : rest[(end + 1)..];
            if (bytes.EndsWith("\r"u8)) bytes = bytes[..^1];
            lineNumber++;
            string line;
            try { line = strict.GetString(bytes); }
            catch (DecoderFallbackException e)
            {
                string at = e.Index >= 0 ? $", byte {e.Index + 1}" : "";
                throw new InvalidDataException($"prompts file '{path}', line {lineNumber}{at}: not valid UTF-8");
            }
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new InvalidDataException($"prompts file '{path}', line {lineNumber}: not valid JSON ({e.Message})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"prompts file '{path}', line {lineNumber}: expected a JSON object with a \"prompt\" field");
                if (!doc.RootElement.TryGetProperty("prompt", out var prompt))
                    throw new InvalidDataException($"prompts file '{path}', line {lineNumber}: no \"prompt\" field");
                if (prompt.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"prompts file '{path}', line {lineNumber}: \"prompt\" must be a string, not {prompt.ValueKind}");
                var text = prompt.GetString()!;
                if (text.Length == 0) throw new InvalidDataException($"prompts file '{path}', line {lineNumber}: empty prompt");
                prompts.Add(text);
            }
        }
        return prompts;
    }

    private static List<string> ReadParquet(string path)
    {
        try { return ReadParquetAsync(path).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is IOException or NotSupportedException or InvalidOperationException or ArgumentException or FormatException && e is not InvalidDataException)
        {
            throw new InvalidDataException($"prompts file '{path}': not a readable Parquet file ({e.Message})");
        }
    }

    private static async Task<List<string>> ReadParquetAsync(string path)
    {
        using var stream = File.OpenRead(path);
        await using var reader = await ParquetReader.CreateAsync(stream);
        var fields = reader.Schema.GetDataFields();
        var field = fields.FirstOrDefault(f => f.Name == "prompt")
            ?? throw new InvalidDataException($"prompts file '{path}': no column \"prompt\" (columns: {string.Join(", ", fields.Select(f => f.Name))})");
        if (field.ClrType != typeof(string) && field.ClrType != typeof(ReadOnlyMemory<char>))
            throw new InvalidDataException($"prompts file '{path}': column \"prompt\" holds {field.ClrType.Name}, not text");
        var prompts = new List<string>();
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            var values = new string?[checked((int)group.RowCount)];
            await group.ReadAsync(field, values.AsMemory(), null);
            foreach (var text in values)
            {
                if (string.IsNullOrEmpty(text))
                    throw new InvalidDataException($"prompts file '{path}': row {prompts.Count}: empty or null prompt");
                prompts.Add(text);
            }
        }
        return prompts;
    }
}
