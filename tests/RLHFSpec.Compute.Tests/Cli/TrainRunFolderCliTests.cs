using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec train</c> as a process on a small random model: a run folder is never reused or shared by accident
/// (a finished run is refused without <c>--overwrite</c>, a held folder is refused naming the holder's process, a
/// resume checks that config and checkpoint belong together and says when the run is already finished), a start
/// that fails leaves no run folder, and a resume removes the temporaries a killed run left.
/// </summary>
[TestFixture]
public sealed class TrainRunFolderCliTests
{
    private FormatsTestFolder _folder = null!;
    private string _policy = null!;

    [OneTimeSetUp]
    public void SaveRandomModel()
    {
        _folder = new FormatsTestFolder();
        _policy = CliRunner.SaveRandomModel(_folder.File("policy"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 64);
    }

    [OneTimeTearDown]
    public void Cleanup() => _folder.Dispose();

    private string[] Train(params string[] more) =>
        ["train", "--policy", _policy, "--draft", "none", "--speculation", "off", "--device", "cpu", "--threads", "1", "--iterations", "1",
            "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "4", "--minibatch-size", "4", "--kv-memory-mib", "8", .. more];

    private static string OneErrorLine(string stderr)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), stderr);
        Assert.That(lines[0], Does.StartWith("rlhfspec: error: "));
        return lines[0];
    }

    [Test]
    public void A_finished_run_is_not_overwritten_and_a_resume_of_it_says_it_is_finished()
    {
        string run = _folder.File("finished");
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, Train("--out", run, "--seed", "1"));
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        string metrics = File.ReadAllText(Path.Combine(run, RlhfTrainer.MetricsFile)), config = File.ReadAllText(Path.Combine(run, RlhfTrainer.ConfigFile));
        Assert.That(metrics, Is.Not.Empty);

        var (again, _, againErr) = CliRunner.Run(_folder.Path, Train("--out", run, "--seed", "2"));
        Assert.That(again, Is.EqualTo(2));
        Assert.That(OneErrorLine(againErr), Does.Contain($"--out '{run}'").And.Contain("--resume").And.Contain("--overwrite"));
        Assert.That(File.ReadAllText(Path.Combine(run, RlhfTrainer.MetricsFile)), Is.EqualTo(metrics), "the old run's metrics are untouched");
        Assert.That(File.ReadAllText(Path.Combine(run, RlhfTrainer.ConfigFile)), Is.EqualTo(config), "the old run's config is untouched");

        var (resumed, _, resumedErr) = CliRunner.Run(_folder.Path, "train", "--resume", run);
        Assert.That(resumed, Is.EqualTo(2));
        Assert.That(OneErrorLine(resumedErr), Does.Contain("already finished").And.Contain("iteration 1"));

        var (overwritten, overOut, overErr) = CliRunner.Run(_folder.Path, Train("--out", run, "--seed", "2", "--overwrite"));
        Assert.That(overwritten, Is.EqualTo(0), overErr + overOut);
        Assert.That(File.ReadAllText(Path.Combine(run, RlhfTrainer.ConfigFile)), Does.Match("\"seed\": *2"), "the new run's config");
        Assert.That(File.ReadAllLines(Path.Combine(run, RlhfTrainer.MetricsFile)), Has.Length.EqualTo(2), "the evaluation before training and iteration 1");

        // A folder that holds anything but a run is refused even with --overwrite.
        string other = _folder.File("other");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "notes.txt"), "mine");
        var (foreign, _, foreignErr) = CliRunner.Run(_folder.Path, Train("--out", other, "--overwrite"));
        Assert.That(foreign, Is.EqualTo(2));
        Assert.That(OneErrorLine(foreignErr), Does.Contain("not a run folder").And.Contain("notes.txt"));
        Assert.That(Directory.GetFileSystemEntries(other).Select(Path.GetFileName), Is.EqualTo(new[] { "notes.txt" }));
    }

    [Test]
    public void A_resume_refuses_a_config_that_does_not_belong_to_its_checkpoint_and_removes_stale_temporaries()
    {
        string run = _folder.File("mixed");
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, Train("--out", run));
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        string configFile = Path.Combine(run, RlhfTrainer.ConfigFile), config = File.ReadAllText(configFile);

        // Debris of a run killed while writing a checkpoint: a temporary checkpoint folder and a temporary file.
        string staleFolder = Path.Combine(run, RlhfTrainer.CheckpointsFolder, ".iter-000002.0123456789abcdef.tmp");
        Directory.CreateDirectory(staleFolder);
        File.WriteAllText(Path.Combine(staleFolder, "model.safetensors"), "half");
        string staleFile = Path.Combine(run, ".metrics.jsonl.0123456789abcdef.tmp");
        File.WriteAllText(staleFile, "half");
        string staleAnswers = Path.Combine(run, EvaluationAnswers.Folder, ".iter-2.jsonl.0123456789abcdef.tmp");
        File.WriteAllText(staleAnswers, "half");

        File.WriteAllText(configFile, System.Text.RegularExpressions.Regex.Replace(config, "\"seed\": *[0-9]+", "\"seed\": 77"));
        Assert.That(File.ReadAllText(configFile), Is.Not.EqualTo(config));
        var (mixed, _, mixedErr) = CliRunner.Run(_folder.Path, "train", "--resume", run, "--iterations", "2");
        Assert.That(mixed, Is.EqualTo(2));
        Assert.That(OneErrorLine(mixedErr), Does.Contain("does not belong to checkpoint iter-000001"));

        File.WriteAllText(configFile, config);
        var (resumed, resumedOut, resumedErr) = CliRunner.Run(_folder.Path, "train", "--resume", run, "--iterations", "2");
        Assert.That(resumed, Is.EqualTo(0), resumedErr + resumedOut);
        Assert.That(File.ReadAllLines(Path.Combine(run, RlhfTrainer.MetricsFile)), Has.Length.EqualTo(3), "the evaluation before training and iterations 1–2");
        Assert.That(Directory.Exists(staleFolder), Is.False, "the stale temporary checkpoint folder is removed");
        Assert.That(File.Exists(staleFile), Is.False, "the stale temporary file is removed");
        Assert.That(File.Exists(staleAnswers), Is.False, "the stale temporary answers file is removed");

        // A missing 'latest' is not "no checkpoint": the message names the checkpoints that exist.
        File.Delete(Path.Combine(run, RlhfTrainer.LatestFile));
        var (noLatest, _, noLatestErr) = CliRunner.Run(_folder.Path, "train", "--resume", run, "--iterations", "3");
        Assert.That(noLatest, Is.EqualTo(2));
        Assert.That(OneErrorLine(noLatestErr), Does.Contain("'latest' file is missing").And.Contain("iter-000002"));
    }

    [Test]
    public void A_held_run_folder_is_refused_naming_the_holders_process()
    {
        string run = _folder.File("held");
        using (RunFolder.Open(run, RunFolderMode.New))
        {
            var (exit, _, stderr) = CliRunner.Run(_folder.Path, Train("--out", run));
            Assert.That(exit, Is.EqualTo(2));
            Assert.That(OneErrorLine(stderr), Does.Contain($"--out '{run}' is in use").And.Contain($"process {Environment.ProcessId}"));
            var (resumed, _, resumedErr) = CliRunner.Run(_folder.Path, "train", "--resume", run);
            Assert.That(resumed, Is.EqualTo(2));
            Assert.That(OneErrorLine(resumedErr), Does.Contain("in use").And.Contain($"process {Environment.ProcessId}"));
            Assert.That(() => RunFolder.Open(run, RunFolderMode.New), Throws.ArgumentException.With.Message.Contains("in use"), "in one process too");
        }
        // Released: the folder is free again (and holds no run).
        using (var again = RunFolder.Open(run, RunFolderMode.New)) Assert.That(again.FullPath, Is.EqualTo(Path.GetFullPath(run)));
    }

    [Test]
    public void Default_run_names_are_unique_within_a_second()
    {
        string parent = _folder.File("runs");
        using var first = RunFolder.CreateUnique(parent);
        using var second = RunFolder.CreateUnique(parent);
        using var third = RunFolder.CreateUnique(parent);
        Assert.That(new[] { first.FullPath, second.FullPath, third.FullPath }.Distinct().Count(), Is.EqualTo(3));
        Assert.That(Directory.GetDirectories(parent), Has.Length.EqualTo(3));
    }

    [Test]
    public void A_start_that_fails_leaves_no_run_folder()
    {
        string run = _folder.File("failed");
        var (exit, _, stderr) = CliRunner.Run(_folder.Path, Train("--out", run, "--reallocate", "on"));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(OneErrorLine(stderr), Does.Contain("instances"));
        Assert.That(Directory.Exists(run), Is.False, "no run folder is left");

        // Failing after the model was loaded (a prompt the tokenizer cannot encode): still nothing left.
        string prompts = _folder.File("spaced.jsonl");
        File.WriteAllText(prompts, "{\"prompt\": \"1 + 2 =\"}\n");
        var (late, _, lateErr) = CliRunner.Run(_folder.Path, Train("--out", run, "--prompts", prompts, "--reward", "regex:x"));
        Assert.That(late, Is.EqualTo(2));
        Assert.That(OneErrorLine(lateErr), Does.Contain("prompt 0"));
        Assert.That(Directory.Exists(run), Is.False, "no run folder is left");

        // An empty folder given by the user stays, empty.
        Directory.CreateDirectory(run);
        Assert.That(CliRunner.Run(_folder.Path, Train("--out", run, "--reallocate", "on")).Exit, Is.EqualTo(2));
        Assert.That(Directory.GetFileSystemEntries(run), Is.Empty);
    }

    [Test]
    public void The_end_of_a_run_prints_its_summary_and_writes_summary_json()
    {
        string run = _folder.File("summarised");
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, Train("--out", run, "--set", "iterations=2", "--eval-every", "1", "--eval-num-prompts", "8", "--task-max-terms", "3"));
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(stdout, Does.Contain("held-out change, answer by answer"));
        Assert.That(File.ReadAllText(Path.Combine(run, RlhfTrainer.ConfigFile)), Does.Contain("\"task_max_terms\": 3"));
        Assert.That(Directory.GetFiles(Path.Combine(run, EvaluationAnswers.Folder)).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "iter-0.jsonl", "iter-1.jsonl", "iter-2.jsonl" }));
        Assert.That(stdout, Does.Contain("held-out evaluation: 8 task prompts").And.Contain("iter 0: held-out accuracy"));
        Assert.That(stdout, Does.Contain("run summary: 2 of 2 iterations").And.Contain("held-out accuracy (8 prompts)").And.Contain("checkpoint to use"));
        var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, RlhfTrainer.SummaryFile))).RootElement;
        Assert.That(summary.GetProperty("iterations").GetInt32(), Is.EqualTo(2));
        Assert.That(summary.GetProperty("eval_accuracy").GetProperty("last_iteration").GetInt32(), Is.EqualTo(2));
        Assert.That(Directory.Exists(summary.GetProperty("checkpoint").GetString()), summary.GetProperty("checkpoint").GetString());
        Assert.That(File.ReadAllLines(Path.Combine(run, HeldOutEvaluation.PromptsFile)), Has.Length.EqualTo(8));
        Assert.That(Directory.GetFileSystemEntries(run).Select(Path.GetFileName).Where(n => n!.EndsWith(".tmp")), Is.Empty, "no temporary file left");

        // A missing evaluation file: one line naming it, no run folder left.
        string missing = _folder.File("no-such-eval.jsonl");
        string other = _folder.File("no-eval-run");
        var (bad, _, badErr) = CliRunner.Run(_folder.Path, Train("--out", other, "--eval-prompts", missing));
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(OneErrorLine(badErr), Does.Contain(missing));
        Assert.That(Directory.Exists(other), Is.False);
    }

    [Test]
    public void Train_out_naming_a_regular_file_is_one_line()
    {
        string file = _folder.File("a-file");
        File.WriteAllText(file, "keep");
        var (exit, _, stderr) = CliRunner.Run(_folder.Path, Train("--out", file));
        Assert.That(exit, Is.EqualTo(2));
        Assert.That(OneErrorLine(stderr), Does.Contain($"--out '{file}'").And.Contain("is a file"));
        Assert.That(File.ReadAllText(file), Is.EqualTo("keep"));
    }
}
