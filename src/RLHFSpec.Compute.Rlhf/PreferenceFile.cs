using System.Text;
using System.Text.Json;
using Parquet;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Preference pairs from a file: JSONL (one object per line with string fields <c>prompt</c>, <c>chosen</c>,
/// <c>rejected</c>; blank lines skipped) or Parquet (string columns of those names), chosen by extension
/// (<c>.parquet</c>) or content, as <see cref="Generation.IO.PromptFile"/> does for prompts. Every problem is an
/// <see cref="InvalidDataException"/> naming the file, the line (or row) and the field.
/// </summary>
public static class PreferenceFile
{
    public static readonly string[] Fields = ["prompt", "chosen", "rejected"];

    public static IReadOnlyList<PreferencePair> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException(Directory.Exists(path) ? $"pairs file '{path}' is a folder, not a file" : $"pairs file '{path}' does not exist", path);
        var pairs = IsParquet(path) ? ReadParquet(path) : ReadJsonl(path);
        if (pairs.Count == 0) throw new InvalidDataException($"pairs file '{path}': no pairs");
        return pairs;
    }

    private static bool IsParquet(string path)
    {
        if (path.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase)) return true;
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return f.Read(magic) == 4 && magic.SequenceEqual("PAR1"u8);
    }

    private static PreferencePair Make(string path, string where, string?[] values)
    {
        for (int k = 1; k < 3; k++)
            if (string.IsNullOrEmpty(values[k])) throw new InvalidDataException($"pairs file '{path}', {where}: empty \"{Fields[k]}\"");
        return new PreferencePair(values[0] ?? "", values[1]!, values[2]!, $"pairs file '{path}', {where}");
    }

    private static List<PreferencePair> ReadJsonl(string path)
    {
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        var pairs = new List<PreferencePair>();
        using var reader = new StreamReader(path, strict, detectEncodingFromByteOrderMarks: true);
        int lineNumber = 0;
        while (true)
        {
            string? line;
            try { line = reader.ReadLine(); }
            catch (DecoderFallbackException) { throw new InvalidDataException($"pairs file '{path}', line {lineNumber + 1}: not valid UTF-8"); }
            if (line is null) break;
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new InvalidDataException($"pairs file '{path}', line {lineNumber}: not valid JSON ({e.Message})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"pairs file '{path}', line {lineNumber}: expected a JSON object with \"prompt\", \"chosen\" and \"rejected\" fields");
                var values = new string?[3];
                for (int k = 0; k < 3; k++)
                {
                    if (!doc.RootElement.TryGetProperty(Fields[k], out var field))
                        throw new InvalidDataException($"pairs file '{path}', line {lineNumber}: no \"{Fields[k]}\" field");
                    if (field.ValueKind != JsonValueKind.String)
                        throw new InvalidDataException($"pairs file '{path}', line {lineNumber}: \"{Fields[k]}\" must be a string, not {field.ValueKind}");
                    values[k] = field.GetString();
                }
                pairs.Add(Make(path, $"line {lineNumber}", values));
            }
        }
        return pairs;
    }

    private static List<PreferencePair> ReadParquet(string path)
    {
        try { return ReadParquetAsync(path).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is IOException or NotSupportedException or InvalidOperationException or ArgumentException or FormatException && e is not InvalidDataException)
        {
            throw new InvalidDataException($"pairs file '{path}': not a readable Parquet file ({e.Message})");
        }
    }

    private static async Task<List<PreferencePair>> ReadParquetAsync(string path)
    {
        using var stream = File.OpenRead(path);
        await using var reader = await ParquetReader.CreateAsync(stream);
        var fields = reader.Schema.GetDataFields();
        var columns = Fields.Select(name =>
        {
            var field = fields.FirstOrDefault(f => f.Name == name)
                ?? throw new InvalidDataException($"pairs file '{path}': no column \"{name}\" (columns: {string.Join(", ", fields.Select(f => f.Name))})");
            if (field.ClrType != typeof(string) && field.ClrType != typeof(ReadOnlyMemory<char>))
                throw new InvalidDataException($"pairs file '{path}': column \"{name}\" holds {field.ClrType.Name}, not text");
            return field;
        }).ToArray();
        var pairs = new List<PreferencePair>();
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            int rows = checked((int)group.RowCount);
            var values = new string?[3][];
            for (int k = 0; k < 3; k++)
            {
                values[k] = new string?[rows];
                await group.ReadAsync(columns[k], values[k].AsMemory(), null);
            }
            for (int r = 0; r < rows; r++) pairs.Add(Make(path, $"row {pairs.Count}", [values[0][r], values[1][r], values[2][r]]));
        }
        return pairs;
    }
}
