using System.Text;
using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The answers of every held-out evaluation of a run, one JSONL file per evaluation in the run folder
/// (<c>evaluations/iter-N.jsonl</c>, prompt order; N = 0 before training), as verl dumps its validation generations.
/// They let the summary compare the first and the last evaluation answer by answer (<see cref="PairedChange"/>), also
/// after a resume.
/// </summary>
public static class EvaluationAnswers
{
    public const string Folder = "evaluations";

    private static readonly JsonSerializerOptions Json = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string PathOf(string runFolder, int iteration) => Path.Combine(runFolder, Folder, $"iter-{iteration}.jsonl");

    /// <summary>Writes one evaluation's answers atomically.</summary>
    public static void Write(string runFolder, int iteration, IReadOnlyList<EvaluationAnswer> answers)
    {
        Directory.CreateDirectory(Path.Combine(runFolder, Folder));
        var text = new StringBuilder();
        foreach (var a in answers) text.Append(JsonSerializer.Serialize(a, Json)).Append('\n');
        AtomicFile.WriteText(PathOf(runFolder, iteration), text.ToString());
    }

    /// <summary>One evaluation's answers, or null when the run has no file for it (a run from before these files, or evaluation off).</summary>
    public static IReadOnlyList<EvaluationAnswer>? Read(string runFolder, int iteration)
    {
        string path = PathOf(runFolder, iteration);
        if (!File.Exists(path)) return null;
        var answers = new List<EvaluationAnswer>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (text.Length == 0) continue;
            try { answers.Add(JsonSerializer.Deserialize<EvaluationAnswer>(text) ?? throw new JsonException("null")); }
            catch (JsonException e) { throw new InvalidDataException($"{path}: line {line}: {e.Message}"); }
        }
        return answers;
    }
}
