using System.Text;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// The CLI's messages for bad input, as a process: one line, exit 2, and the right place named (the line of a bad
/// UTF-8 byte counted in bytes, a folder called a folder, a whole code point, the tensor holding a NaN, a duplicate
/// config key).
/// </summary>
[TestFixture]
public sealed class MessagesCliTests
{
    private FormatsTestFolder _folder = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public void SaveRandomModel()
    {
        _folder = new FormatsTestFolder();
        _model = CliRunner.SaveRandomModel(_folder.File("model"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 64);
    }

    [OneTimeTearDown]
    public void Cleanup() => _folder.Dispose();

    private string Error(params string[] args)
    {
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, args);
        Assert.That(exit, Is.EqualTo(2), stderr + stdout);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), stderr);
        Assert.That(lines[0], Does.StartWith("rlhfspec: error: "));
        return lines[0];
    }

    private string GenerateError(params string[] more) =>
        Error(["generate", "--model", _model, "--device", "cpu", "--max-new-tokens", "4", "--threads", "1", "--strategy", "off", .. more]);

    [TestCase(2)]
    [TestCase(301)]
    public void A_bad_utf8_byte_is_reported_on_its_own_line(int badLine)
    {
        string prompts = _folder.File($"bad-{badLine}.jsonl");
        var bytes = new List<byte>();
        for (int i = 1; i < badLine; i++) bytes.AddRange(Encoding.UTF8.GetBytes("{\"prompt\": \"1+2=\"}\n"));
        bytes.AddRange([.. "{\"prompt\": \"1+"u8, 0xff, .. "=\"}\n"u8]);
        for (int i = 0; i < 50; i++) bytes.AddRange(Encoding.UTF8.GetBytes("{\"prompt\": \"3+4=\"}\n"));
        File.WriteAllBytes(prompts, bytes.ToArray());
        Assert.That(GenerateError("--prompts", prompts), Does.Contain($"line {badLine}, byte 15: not valid UTF-8"));
    }

    [Test]
    public void A_folder_where_a_file_is_expected_is_called_a_folder()
    {
        string folder = _folder.File("prompts-folder");
        Directory.CreateDirectory(folder);
        Assert.That(GenerateError("--prompts", folder), Does.Contain($"'{folder}' is a folder, not a file"));
        Assert.That(Error("train", "--config", folder), Does.Contain($"config '{folder}' is a folder, not a file"));
    }

    [Test]
    public void A_character_outside_the_bmp_is_named_by_its_whole_code_point()
    {
        string prompts = _folder.File("emoji.jsonl");
        File.WriteAllText(prompts, "{\"prompt\": \"1+\\ud83d\\ude00=\"}\n");
        string message = GenerateError("--prompts", prompts);
        Assert.That(message, Does.Contain("U+1F600").And.Contain("'\U0001F600'").And.Not.Contain("U+D83D"));
    }

    [Test]
    public void Nan_weights_name_the_file_and_tensor()
    {
        var tokenizer = ArithmeticTokenizer.Create();
        var config = PretrainModelSpec.LlamaConfig(tokenizer, 32, layers: 1, 4, 2, 64, 64);
        using var weights = TransformerWeights.Random(config, 1, 0.2);
        weights.Arena.Span("model.layers.0.mlp.up_proj.weight")[5] = float.NaN;
        string folder = _folder.File("nan-model");
        Checkpoint.Save(folder, config, weights.ToHostTensors(), tokenizer);
        var message = Error("generate", "--model", folder, "--device", "cpu", "--max-new-tokens", "4", "--threads", "1", "--strategy", "off");
        Assert.That(message, Does.Contain(Path.Combine(folder, "model.safetensors")).And.Contain("tensor 'model.layers.0.mlp.up_proj.weight' holds NaN at element 5"));
    }

    [Test]
    public void Config_errors_are_one_line_and_a_duplicate_key_is_refused()
    {
        string duplicate = _folder.File("duplicate.json"), broken = _folder.File("broken.json");
        File.WriteAllText(duplicate, "{\n  \"iterations\": 1,\n  \"iterations\": 2\n}\n");
        File.WriteAllText(broken, "{\n  \"iterations\": ,\n}\n");
        Assert.That(Error("train", "--config", duplicate), Does.Contain("duplicate key").And.Contain("iterations"));
        Assert.That(Error("train", "--config", broken), Does.Contain($"config '{broken}'"));
        Assert.That(Error("generate", "--no-such-option", "--num-prompts", "x"), Does.Contain("--no-such-option").And.Contain("--num-prompts"));
    }

    [Test]
    public void Memory_is_checked_before_anything_is_reserved()
    {
        string huge = GenerateError("--num-prompts", "2", "--samples-per-prompt", "2", "--kv-memory-mib", "2000000000");
        Assert.That(huge, Does.Contain("--instances × --kv-memory-mib: the run would reserve about").And.Contain("is available"));

        // Each instance fits, all of them together do not: the numbers say so.
        long third = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 3 >> 20;
        string many = GenerateError("--num-prompts", "2", "--samples-per-prompt", "2", "--instances", "4", "--kv-memory-mib", third.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.That(many, Does.Contain("5 KV cache(s)"));

        // More instances than samples: clamped, said, and the run goes on.
        string output = _folder.File("clamped.jsonl");
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, "generate", "--model", _model, "--device", "cpu", "--max-new-tokens", "4", "--threads", "1",
            "--strategy", "off", "--num-prompts", "2", "--samples-per-prompt", "2", "--instances", "1000", "--out", output);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(stdout, Does.Contain("--instances 1000: clamped to 4, the number of samples"));
        Assert.That(File.ReadAllLines(output), Has.Length.EqualTo(4));
    }
}
