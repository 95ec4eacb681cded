using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec train-rm</c> as a process on a small random base model: a run on default-task pairs writes the reward
/// model (HF layout) and train_rm.json; a run on a pairs file works too; bad input (missing file, a line without
/// <c>chosen</c>, an empty file, chosen = rejected everywhere, non-positive sizes) gives one line on stderr naming the
/// file, line or flag, exit code 2, and no output folder.
/// </summary>
[TestFixture]
public sealed class TrainRmCliTests
{
    private FormatsTestFolder _folder = null!;
    private string _model = null!;

    [OneTimeSetUp]
    public void SaveRandomModel()
    {
        _folder = new FormatsTestFolder();
        _model = CliRunner.SaveRandomModel(_folder.File("model"), hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, maxPositions: 256, std: 0.1);
    }

    [OneTimeTearDown]
    public void Cleanup() => _folder.Dispose();

    [Test]
    public void A_run_on_default_task_pairs_and_one_on_a_pairs_file_write_a_reward_model()
    {
        string output = _folder.File("rm-task");
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, "train-rm", "--model", _model, "--out", output, "--task-pairs", "48", "--task-max-terms", "3",
            "--epochs", "2", "--batch-size", "8", "--threads", "1", "--eval-fraction", "0.25");
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(stdout, Does.Contain("epoch 1: train loss").And.Contain("epoch 2: train loss").And.Contain("held-out accuracy"));
        using (var checkpoint = Checkpoint.Load(output))
            Assert.That(checkpoint.Config.IsSequenceClassifier && checkpoint.Config.NumLabels == 1);
        using (var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, RewardModelTrainer.SummaryFile))))
        {
            Assert.That(summary.RootElement.GetProperty("train_pairs").GetInt32() + summary.RootElement.GetProperty("eval_pairs").GetInt32(), Is.EqualTo(48));
            Assert.That(summary.RootElement.GetProperty("epochs").GetArrayLength(), Is.EqualTo(2));
        }

        string pairs = _folder.File("pairs.jsonl"), fromFile = _folder.File("rm-file");
        File.WriteAllLines(pairs, TaskPreferencePairs.Generate(12, 4, maxTerms: 2).Select(p => JsonSerializer.Serialize(new { prompt = p.Prompt, chosen = p.Chosen, rejected = p.Rejected }))
            .Append("{\"prompt\": \"1+1=\", \"chosen\": \"1+1=2#2\", \"rejected\": \"1+1=2#2\"}"));
        (exit, stdout, stderr) = CliRunner.Run(_folder.Path, "train-rm", "--model", _model, "--out", fromFile, "--pairs", pairs, "--epochs", "1", "--threads", "1");
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(stdout, Does.Contain("1 identical pair(s) left out"));
        Assert.That(File.Exists(Path.Combine(fromFile, RewardModelTrainer.SummaryFile)));
    }

    [TestCase("missing", "does not exist")]
    [TestCase("no-chosen", "line 2: no \"chosen\" field")]
    [TestCase("empty", "no pairs")]
    [TestCase("same", "\"chosen\" equals \"rejected\"")]
    [TestCase("epochs", "--epochs: 0")]
    [TestCase("batch", "--batch-size: -1")]
    [TestCase("task-pairs", "--task-pairs: 0")]
    public void Bad_input_is_one_line_and_no_output(string kind, string expected)
    {
        string pairs = _folder.File($"bad-{kind}.jsonl"), output = _folder.File($"out-{kind}");
        const string good = "{\"prompt\": \"1+2=\", \"chosen\": \"1+2=3#3\", \"rejected\": \"1+2=3#4\"}";
        var extra = new List<string>();
        switch (kind)
        {
            case "no-chosen": File.WriteAllLines(pairs, [good, "{\"prompt\": \"1+2=\", \"rejected\": \"1+2=3#4\"}"]); break;
            case "empty": File.WriteAllText(pairs, "\n"); break;
            case "same": File.WriteAllLines(pairs, ["{\"prompt\": \"1+2=\", \"chosen\": \"1+2=3#3\", \"rejected\": \"1+2=3#3\"}"]); break;
            case "epochs": File.WriteAllLines(pairs, [good]); extra.AddRange(["--epochs", "0"]); break;
            case "batch": File.WriteAllLines(pairs, [good]); extra.AddRange(["--batch-size", "-1"]); break;
        }
        string[] args = kind == "task-pairs"
            ? ["train-rm", "--model", _model, "--out", output, "--task-pairs", "0"]
            : ["train-rm", "--model", _model, "--out", output, "--pairs", pairs, .. extra];
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, args);
        Assert.That(exit, Is.EqualTo(2), stdout + stderr);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), stderr);
        Assert.That(lines[0], Does.StartWith("rlhfspec: error:").And.Contain(expected));
        if (kind is "missing" or "no-chosen" or "empty" or "same") Assert.That(lines[0], Does.Contain(pairs));
        Assert.That(Directory.Exists(output), Is.False, "no output");
        Assert.That(Directory.GetDirectories(_folder.Path, $".out-{kind}*"), Is.Empty, "no temporary output");
    }
}
