using Parquet.Serialization;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Rlhf;

/// <summary>Preference pairs from JSONL and Parquet, errors naming file, line and field; the default task's pairs are right/wrong by its verifier.</summary>
public sealed class PreferenceFileTests
{
    public record PairRow(string prompt, string chosen, string rejected);

    public record NoRejectedRow(string prompt, string chosen);

    [Test]
    public async Task Reads_jsonl_and_parquet_pairs()
    {
        using var folder = new FormatsTestFolder();
        string jsonl = folder.File("pairs.jsonl");
        File.WriteAllText(jsonl, "{\"prompt\": \"1+2=\", \"chosen\": \"1+2=3#3\", \"rejected\": \"1+2=3#4\"}\n\n{\"prompt\": \"\", \"chosen\": \"a\", \"rejected\": \"b\"}\n");
        var pairs = PreferenceFile.Read(jsonl);
        Assert.That(pairs.Select(p => (p.Prompt, p.Chosen, p.Rejected)), Is.EqualTo(new[] { ("1+2=", "1+2=3#3", "1+2=3#4"), ("", "a", "b") }));
        Assert.That(pairs[1].Origin, Does.Contain("line 3"));

        string parquet = folder.File("pairs.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new PairRow("3+4=", "3+4=7#7", "3+4=7#8") }, parquet);
        Assert.That(PreferenceFile.Read(parquet).Single(), Is.EqualTo(new PreferencePair("3+4=", "3+4=7#7", "3+4=7#8", $"pairs file '{parquet}', row 0")));
        string missing = folder.File("missing.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new NoRejectedRow("3+4=", "3+4=7#7") }, missing);
        Assert.That(() => PreferenceFile.Read(missing), Throws.InstanceOf<InvalidDataException>().With.Message.Contains("no column \"rejected\""));
    }

    [TestCase("{\"prompt\": \"1\", \"chosen\": \"a\"}", "line 1: no \"rejected\" field")]
    [TestCase("{\"prompt\": \"1\", \"chosen\": 3, \"rejected\": \"b\"}", "line 1: \"chosen\" must be a string")]
    [TestCase("{\"prompt\": \"1\", \"chosen\": \"\", \"rejected\": \"b\"}", "line 1: empty \"chosen\"")]
    [TestCase("[1, 2]", "line 1: expected a JSON object")]
    [TestCase("{", "line 1: not valid JSON")]
    public void Bad_lines_name_the_file_line_and_field(string line, string expected)
    {
        using var folder = new FormatsTestFolder();
        string path = folder.File("bad.jsonl");
        File.WriteAllText(path, line + "\n");
        Assert.That(() => PreferenceFile.Read(path), Throws.InstanceOf<InvalidDataException>().With.Message.Contains(path).And.Message.Contains(expected));
    }

    [Test]
    public void Default_task_pairs_are_right_and_wrong_by_the_verifier()
    {
        var pairs = TaskPreferencePairs.Generate(300, seed: 9, maxTerms: 6);
        Assert.That(pairs, Has.Count.EqualTo(300));
        foreach (var p in pairs)
        {
            Assert.That(ArithmeticTask.Reward(p.Prompt, p.Chosen), Is.EqualTo(1.0), p.Origin);
            Assert.That(ArithmeticTask.Reward(p.Prompt, p.Rejected), Is.EqualTo(0.0), p.Origin);
            Assert.That(p.Prompt.Count(c => c == '+') + 1, Is.LessThanOrEqualTo(6));
        }
        // Both kinds of mistake occur: a wrong final answer after right steps, and a wrong step carried on.
        bool WrongAnswerOnly(PreferencePair p) => p.Rejected[..p.Rejected.LastIndexOf('#')] == p.Chosen[..p.Chosen.LastIndexOf('#')];
        Assert.That(pairs.Count(WrongAnswerOnly), Is.InRange(50, 250));
        Assert.That(TaskPreferencePairs.Generate(5, seed: 9, maxTerms: 6), Is.EqualTo(pairs.Take(5)), "seeded");
    }
}
