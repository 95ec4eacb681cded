using System.IO.Compression;
using Microsoft.ML.Tokenizers;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// The tiktoken path on a real vocabulary: cl100k_base, taken from the Microsoft.ML.Tokenizers.Data.Cl100kBase package
/// (a deflated resource) and written out as the plain file a model folder would hold. Known ids, and
/// agreement with the library's own cl100k tokenizer on varied text.
/// </summary>
public class TokenizerTiktokenDataTests
{
    private FormatsTestFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new FormatsTestFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private string ExtractCl100k()
    {
        var asm = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Cl100kBase");
        using var resource = asm.GetManifestResourceStream("cl100k_base.tiktoken.deflate")
            ?? throw new InvalidOperationException("cl100k resource not found in " + asm.FullName);
        // The package stores its own compact variant ("Capacity: N", then one base64 token per line, rank = line
        // index); write the standard "base64 rank" lines of a .tiktoken file.
        string path = _folder.File("cl100k_base.tiktoken");
        using var reader = new StreamReader(new DeflateStream(resource, CompressionMode.Decompress));
        using var writer = new StreamWriter(path) { NewLine = "\n" };
        string? line = reader.ReadLine();
        Assert.That(line, Does.StartWith("Capacity:"));
        int rank = 0;
        while ((line = reader.ReadLine()) is not null)
            if (line.Length > 0) writer.WriteLine($"{line} {rank++}");
        return path;
    }

    [Test]
    public void Cl100kFileEncodesKnownIds()
    {
        var special = new Dictionary<string, int> { ["<|endoftext|>"] = 100257 };
        var tok = TextTokenizer.LoadTiktoken(ExtractCl100k(), special);
        Assert.That(tok.Encode("hello world"), Is.EqualTo(new[] { 15339, 1917 }));
        Assert.That(tok.Encode("<|endoftext|>"), Is.EqualTo(new[] { 100257 }));
        Assert.That(tok.VocabSize, Is.EqualTo(100258));

        var reference = TiktokenTokenizer.CreateForEncoding("cl100k_base");
        foreach (var text in new[] { "Q: what is 12 + 345? A: 357", "  indented\n\tcode();\r\n", "héllo wörld — 你好 🙂", "1234567 don't STOP" })
        {
            var ids = tok.Encode(text);
            Assert.That(ids, Is.EqualTo(reference.EncodeToIds(text).ToArray()), text);
            Assert.That(tok.Decode(ids), Is.EqualTo(text));
        }
    }
}
