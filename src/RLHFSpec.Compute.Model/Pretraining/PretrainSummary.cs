using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>What a pretrain run produced: <c>pretrain.json</c> in the output folder, written after every model.</summary>
/// <param name="Seed">The run's seed.</param>
/// <param name="TokenizerFingerprint">The shared tokenizer's fingerprint.</param>
/// <param name="TotalSeconds">Wall time of the whole run.</param>
/// <param name="Models">The models in training order (policy first).</param>
/// <param name="Task">The task version the models learned (<see cref="Tasks.ArithmeticTask.Version"/>); null in
/// summaries written before it was recorded.</param>
public sealed record PretrainSummary(int Seed, string TokenizerFingerprint, double TotalSeconds, IReadOnlyList<PretrainedModel> Models,
    string? Task = null)
{
    public const string FileName = "pretrain.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    /// <summary>Writes <see cref="FileName"/> into the folder (temporary file + rename).</summary>
    public void Save(string folder) => AtomicFile.WriteText(Path.Combine(folder, FileName), JsonSerializer.Serialize(this, Json));

    /// <summary>Reads <see cref="FileName"/> from the folder; InvalidDataException naming the file on bad content.</summary>
    public static PretrainSummary Load(string folder)
    {
        string path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: not found", path);
        try
        {
            return JsonSerializer.Deserialize<PretrainSummary>(File.ReadAllText(path), Json)
                ?? throw new InvalidDataException($"{path}: empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }
}
