using Parquet.Serialization;
using RLHFSpec.Compute.Generation.IO;

namespace RLHFSpec.Compute.Tests.Generation;

public class PromptFileTests
{
    private DirectoryInfo _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("rlhfspec-prompts-");

    [TearDown]
    public void TearDown() => _dir.Delete(recursive: true);

    private string File_(string name, byte[] content)
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, content);
        return path;
    }

    private string Text(string name, string content) => File_(name, System.Text.Encoding.UTF8.GetBytes(content));

    [Test]
    public void ReadsJsonlPromptsSkippingBlankLinesAndOtherFields()
    {
        var path = Text("p.jsonl", "{\"prompt\": \"1+2=\", \"id\": 7}\n\n{\"prompt\": \"héllo \\u00e9\"}\r\n");
        Assert.That(PromptFile.Read(path), Is.EqualTo(new[] { "1+2=", "héllo é" }));
    }

    public record Row(string prompt, int id);

    public record OtherRow(string text);

    [Test]
    public async Task ReadsParquetPromptColumn()
    {
        var path = Path.Combine(_dir.FullName, "p.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new Row("3+4=", 1), new Row("10+20+30=", 2) }, path);
        Assert.That(PromptFile.Read(path), Is.EqualTo(new[] { "3+4=", "10+20+30=" }));
        var other = Path.Combine(_dir.FullName, "other.parquet");
        await ParquetSerializer.SerializeAsync(new[] { new OtherRow("x") }, other);
        var e = Assert.Throws<InvalidDataException>(() => PromptFile.Read(other));
        Assert.That(e!.Message, Does.Contain(other).And.Contain("\"prompt\"").And.Contain("text"));
    }

    [TestCase("", "no prompts")]
    [TestCase("\n\n", "no prompts")]
    [TestCase("{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n", "line 2: no \"prompt\" field")]
    [TestCase("{\"prompt\": 5}\n", "line 1: \"prompt\" must be a string")]
    [TestCase("{\"prompt\": \"a\"}\nnot json\n", "line 2: not valid JSON")]
    [TestCase("[1, 2]\n", "line 1: expected a JSON object")]
    [TestCase("{\"prompt\": \"\"}\n", "line 1: empty prompt")]
    public void BadJsonlNamesTheFileAndLine(string content, string message)
    {
        var path = Text("bad.jsonl", content);
        var e = Assert.Throws<InvalidDataException>(() => PromptFile.Read(path));
        Assert.That(e!.Message, Does.Contain(path).And.Contain(message));
    }

    [Test]
    public void NonUtf8TextIsAnErrorNamingTheLine()
    {
        var path = File_("latin1.jsonl", [.. "{\"prompt\": \"ok\"}\n{\"prompt\": \"caf"u8.ToArray(), 0xE9, .. "\"}\n"u8.ToArray()]);
        var e = Assert.Throws<InvalidDataException>(() => PromptFile.Read(path));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("UTF-8"));
    }

    [Test]
    public void MissingFileIsAnErrorNamingIt() =>
        Assert.That(Assert.Throws<FileNotFoundException>(() => PromptFile.Read(Path.Combine(_dir.FullName, "nope.jsonl")))!.Message, Does.Contain("nope.jsonl"));
}
