using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// The model-set choice (<c>--set NAME</c>, also spelled <c>--model-set NAME</c>; on <c>train</c> only
/// <c>--model-set</c>, config key <c>model_set</c>) on every command that takes a policy, as processes. The models
/// folder (<c>RLHFSPEC_MODELS</c>) is a temporary one holding two tiny pretrained sets: a default set at its root and a
/// medium set in <c>medium/</c>, so a command that ignored the choice would run on the default set and name the wrong
/// policy. Bad choices (a set that is missing, unknown, or named together with a policy folder) are one line on
/// stderr, exit 2, no stack trace, and leave no run folder behind.
/// </summary>
[TestFixture]
public sealed class ModelSetCliTests
{
    private FormatsTestFolder _models = null!, _empty = null!, _work = null!;
    private string _mediumPolicy = "";

    [OneTimeSetUp]
    public void PretrainTinySets()
    {
        _models = new FormatsTestFolder();
        _empty = new FormatsTestFolder();
        _work = new FormatsTestFolder();
        var tokenizer = ArithmeticTokenizer.Create();
        PretrainModelSpec Spec(string name, int hidden, int layers) => new()
        {
            Name = name, Steps = 2, TokensPerBatch = 256,
            Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden, layers, heads: 4, kvHeads: 2, intermediate: 2 * hidden, maxPositions: 256),
        };
        PretrainModelSpec[] Set(int hidden) => [Spec(Pretrainer.PolicyName, hidden, 2), Spec(Pretrainer.DraftSmallName, 16, 1), Spec(Pretrainer.DraftTinyName, 8, 1)];
        var options = new PretrainOptions { EvalPrompts = 0, Threads = 1 };
        Pretrainer.Run(_models.Path, options with { Models = Set(32) });
        string medium = DefaultModels.SetFolder(_models.Path, Pretrainer.MediumSetName);
        Pretrainer.Run(medium, options with { Models = Set(48) });
        Assert.That(DefaultModels.Exists(_models.Path) && DefaultModels.Exists(medium), "both sets are complete");
        _mediumPolicy = DefaultModels.PolicyFolder(medium);
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        _models.Dispose();
        _empty.Dispose();
        _work.Dispose();
    }

    private (int Exit, string Out, string Err) Run(string modelsFolder, string[] args) =>
        CliRunner.RunWithEnvironment(_work.Path, new Dictionary<string, string> { [DefaultModels.EnvironmentVariable] = modelsFolder }, args);

    private const string Small = "--device cpu --threads 1 --num-prompts 2 --samples-per-prompt 2 --max-new-tokens 4";

    /// <summary>Each command with a small workload; "{SET}" is replaced by the set option and name under test.</summary>
    private static readonly object[] Commands =
    [
        new object[] { "generate", $"generate {{SET}} {Small} --strategy chain:2 --temperature 0" },
        new object[] { "bench generation", $"bench generation {{SET}} {Small} --strategies chain:2 --batch-sizes 0" },
        new object[] { "bench train", "bench train {SET} --device cpu --threads 1 --iterations 1 --prompts-per-iteration 2 --samples-per-prompt 2 --max-new-tokens 4" },
        new object[] { "bench model", "bench model {SET} --regime --device cpu --threads 1" },
        new object[] { "bench agreement", $"bench agreement {{SET}} {Small}" },
        new object[] { "simulate --validate", $"simulate --validate {{SET}} {Small} --repeats 1" },
        new object[] { "train", "train {SET} --device cpu --threads 1 --iterations 1 --prompts-per-iteration 2 --samples-per-prompt 2 --max-new-tokens 4 --out {OUT}" },
    ];

    private string[] Args(string template, string set, string? extra = null, string? outFolder = null)
    {
        string setArgs = template.StartsWith("train", StringComparison.Ordinal) ? $"--model-set {set}" : $"--set {set}";
        return (template.Replace("{SET}", setArgs).Replace("{OUT}", outFolder ?? Path.Combine(_work.Path, "run-" + Guid.NewGuid().ToString("N")))
            + (extra is null ? "" : " " + extra)).Split(' ', StringSplitOptions.RemoveEmptyEntries);
    }

    [TestCaseSource(nameof(Commands))]
    public void The_medium_set_replaces_the_default_policy(string command, string template)
    {
        var (exit, stdout, stderr) = Run(_models.Path, Args(template, Pretrainer.MediumSetName));
        Assert.That(exit, Is.EqualTo(0), $"{command}: {stderr}{stdout}");
        Assert.That(Flat(stdout), Does.Contain(_mediumPolicy), $"{command} names the medium set's policy");
    }

    [Test]
    public void The_medium_set_drafts_with_its_tiny_draft_unless_another_is_given()
    {
        string medium = DefaultModels.SetFolder(_models.Path, Pretrainer.MediumSetName);
        string Draft(string name) => DefaultModels.DraftFolder(medium, name);
        var (exit, stdout, stderr) = Run(_models.Path, Args($"generate {{SET}} {Small} --strategy chain:2", Pretrainer.MediumSetName));
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(Flat(stdout), Does.Contain("draft " + Draft(Pretrainer.DraftTinyName)).And.Not.Contain(Draft(Pretrainer.DraftSmallName)), "generate --set medium");

        var (chosen, chosenOut, chosenErr) = Run(_models.Path, Args($"generate {{SET}} {Small} --strategy chain:2", Pretrainer.MediumSetName, $"--draft {Draft(Pretrainer.DraftSmallName)}"));
        Assert.That(chosen, Is.EqualTo(0), chosenErr + chosenOut);
        Assert.That(Flat(chosenOut), Does.Contain("draft " + Draft(Pretrainer.DraftSmallName)), "--draft overrides the set's draft");

        var (plain, plainOut, plainErr) = Run(_models.Path, Args($"generate {{SET}} {Small} --strategy chain:2", DefaultModels.DefaultSetName));
        Assert.That(plain, Is.EqualTo(0), plainErr + plainOut);
        Assert.That(Flat(plainOut), Does.Contain("draft " + DefaultModels.DraftFolder(_models.Path, Pretrainer.DraftSmallName)), "the default set keeps draft-small");
    }

    /// <summary>
    /// A set whose draft.json chose a draft by measurement drafts with that one (here draft-small, where the fixed
    /// default is draft-tiny); a draft.json naming a draft the set lacks is one line, exit 2.
    /// </summary>
    [Test]
    public void The_medium_set_drafts_with_the_draft_its_measurement_chose()
    {
        string medium = DefaultModels.SetFolder(_models.Path, Pretrainer.MediumSetName);
        string small = DefaultModels.DraftFolder(medium, Pretrainer.DraftSmallName);
        var choice = SetDraftChoice.Choose([new(Pretrainer.DraftSmallName, 0.8, 1e-4, 3, 2.0), new(Pretrainer.DraftTinyName, 0.6, 1e-4, 2, 1.5)], [1e-3, 1.1e-3, 1.2e-3], "cpu");
        try
        {
            choice.Save(medium);
            var (exit, stdout, stderr) = Run(_models.Path, Args($"generate {{SET}} {Small} --strategy chain:2", Pretrainer.MediumSetName));
            Assert.That(exit, Is.EqualTo(0), stderr + stdout);
            Assert.That(Flat(stdout), Does.Contain("draft " + small), "the measured choice");

            (choice with { Draft = Pretrainer.DraftSkipName }).Save(medium);
            var (bad, badOut, badErr) = Run(_models.Path, Args($"generate {{SET}} {Small} --strategy chain:2", Pretrainer.MediumSetName));
            Assert.That(bad, Is.EqualTo(2), badOut);
            Assert.That(badErr.Trim().Split('\n'), Has.Length.EqualTo(1), badErr);
            Assert.That(badErr, Does.Contain(SetDraftChoice.FileName).And.Contain("draft-skip"));
        }
        finally { File.Delete(Path.Combine(medium, SetDraftChoice.FileName)); }
    }

    /// <summary>
    /// The measurement that ends <c>pretrain --set medium</c> (here alone, <c>--choose-draft-only</c>, on a copy of the
    /// tiny medium set: the real recipe grows the real default policy): every draft of the set is a candidate with its
    /// agreement and step time, the chosen one has the best predicted speedup, commands then draft with it. Asked of
    /// the default set, or of a folder without a set, it is one line, exit 2.
    /// </summary>
    [Test]
    public void Pretrain_chooses_the_medium_sets_draft_by_measurement()
    {
        string output = Path.Combine(_work.Path, "medium-copy");
        string medium = DefaultModels.SetFolder(_models.Path, Pretrainer.MediumSetName);
        foreach (var file in Directory.EnumerateFiles(medium, "*", SearchOption.AllDirectories))
        {
            string to = Path.Combine(output, Path.GetRelativePath(medium, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
        var (exit, stdout, stderr) = Run(_models.Path, ["pretrain", "--set", "medium", "--choose-draft-only", "--threads", "1", "--out", output]);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        var choice = SetDraftChoice.TryLoad(output);
        Assert.That(choice, Is.Not.Null, "draft.json written");
        var made = PretrainSummary.Load(output).Models.Select(m => m.Name).Where(n => n != Pretrainer.PolicyName).ToArray();
        Assert.That(choice!.Candidates.Select(c => c.Name), Is.EquivalentTo(made));
        Assert.That(choice.Draft, Is.EqualTo(choice.Candidates.MaxBy(c => c.PredictedSpeedup)!.Name));
        Assert.That(choice.VerifySeconds, Has.Count.EqualTo(9).And.All.GreaterThan(0));
        foreach (var c in choice.Candidates)
        {
            Assert.That(c.Agreement, Is.InRange(0.0, 1.0), c.Name);
            Assert.That(c.StepSeconds, Is.GreaterThan(0), c.Name);
            Assert.That(c.PredictedSpeedup, Is.EqualTo(SetDraftChoice.PredictedSpeedup(c.Agreement, c.StepSeconds, choice.VerifySeconds).Speedup), c.Name);
        }
        Assert.That(Flat(stdout), Does.Contain($"the set drafts with {choice.Draft}"));
        Assert.That(DefaultModels.SetDraftName(output, Pretrainer.MediumSetName), Is.EqualTo(choice.Draft));

        foreach (var bad in new[] { new[] { "--set", "default", "--out", output }, ["--set", "medium", "--out", Path.Combine(_work.Path, "no-set")] })
        {
            var (code, badOut, badErr) = Run(_models.Path, ["pretrain", "--choose-draft-only", .. bad]);
            Assert.That(code, Is.EqualTo(2), badOut);
            Assert.That(badErr.Trim().Split('\n'), Has.Length.EqualTo(1), badErr);
            Assert.That(badErr, Does.Contain("--choose-draft-only"));
        }
    }

    [Test]
    public void Model_set_is_the_same_option_as_set_and_a_config_key_of_train()
    {
        var (exit, stdout, stderr) = Run(_models.Path, Args($"generate {{SET}} {Small} --strategy off", Pretrainer.MediumSetName).Select(a => a == "--set" ? "--model-set" : a).ToArray());
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(Flat(stdout), Does.Contain(_mediumPolicy), "generate --model-set");

        string run = Path.Combine(_work.Path, "run-key");
        var (trained, trainOut, trainErr) = Run(_models.Path, ["train", "--set", "model_set=medium", "--device", "cpu", "--threads", "1", "--iterations", "1",
            "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "4", "--out", run]);
        Assert.That(trained, Is.EqualTo(0), trainErr + trainOut);
        Assert.That(Flat(trainOut), Does.Contain(_mediumPolicy), "train --set model_set=medium");
        Assert.That(File.ReadAllText(Path.Combine(run, "config.json")), Does.Contain("\"model_set\": \"medium\""), "the run's config records the set");
    }

    [TestCaseSource(nameof(Commands))]
    public void A_missing_set_is_one_line_saying_how_to_make_it(string command, string template)
    {
        string run = Path.Combine(_work.Path, "run-missing");
        var (exit, stdout, stderr) = Run(_empty.Path, Args(template, Pretrainer.MediumSetName, outFolder: run));
        string option = command == "train" ? "--model-set" : "--set";
        AssertOneLineError(command, exit, stderr, $"rlhfspec: error: {option} medium: no complete set in {Path.Combine(_empty.Path, "medium")}; make it with ./rlhfspec pretrain --set medium");
        Assert.That(Directory.Exists(run), Is.False, $"{command}: no run folder is left");
        Assert.That(Directory.EnumerateFileSystemEntries(_empty.Path), Is.Empty, $"{command}: nothing is pretrained implicitly");
    }

    [TestCaseSource(nameof(Commands))]
    public void An_unknown_set_is_one_line_naming_the_sets(string command, string template)
    {
        var (exit, _, stderr) = Run(_models.Path, Args(template, "large"));
        AssertOneLineError(command, exit, stderr, command == "train"
            ? "rlhfspec: error: model_set: 'large' is not one of default, medium"
            : "rlhfspec: error: --set large: no such model set (sets: default, medium)");
    }

    [TestCaseSource(nameof(Commands))]
    public void A_set_and_a_policy_folder_together_are_refused(string command, string template)
    {
        foreach (var set in new[] { Pretrainer.MediumSetName, DefaultModels.DefaultSetName })
        {
            string run = Path.Combine(_work.Path, "run-conflict");
            var (exit, _, stderr) = Run(_models.Path, Args(template, set, command == "train" ? $"--policy {_mediumPolicy}" : $"--model {_mediumPolicy}", run));
            AssertOneLineError(command, exit, stderr, command == "train"
                ? $"rlhfspec: error: model_set {set} and policy: both name the policy; give one of them"
                : $"rlhfspec: error: --set {set} and --model: both name the policy; give one of them");
            Assert.That(Directory.Exists(run), Is.False, $"{command}: no run folder is left");
        }
    }

    [Test]
    public void Bench_peer_takes_the_set_and_refuses_bad_choices()
    {
        var (missing, _, missingErr) = Run(_empty.Path, ["bench", "peer", "--set", "medium"]);
        AssertOneLineError("bench peer", missing, missingErr, $"rlhfspec: error: --set medium: no complete set in {Path.Combine(_empty.Path, "medium")}; make it with ./rlhfspec pretrain --set medium");
        var (conflict, _, conflictErr) = Run(_models.Path, ["bench", "peer", "--set", "medium", "--model", _mediumPolicy]);
        AssertOneLineError("bench peer", conflict, conflictErr, "rlhfspec: error: --set medium and --model: both name the policy; give one of them");
    }

    [Test]
    public void Simulate_takes_a_set_only_with_validate()
    {
        var (exit, _, stderr) = Run(_models.Path, ["simulate", "--set", "medium", "--cost-profile", Path.Combine(_work.Path, "none.json")]);
        AssertOneLineError("simulate", exit, stderr, "rlhfspec: error: --set medium: only with --validate (the simulator's costs come from --cost-profile)");
    }

    private static void AssertOneLineError(string command, int exit, string stderr, string expected)
    {
        Assert.That(exit, Is.EqualTo(2), $"{command}: {stderr}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.That(lines, Has.Length.EqualTo(1), $"{command}: one line, no stack trace:\n{stderr}");
        Assert.That(lines[0], Is.EqualTo(expected), command);
    }

    /// <summary>Console output with line breaks removed (a long path may be wrapped at the console's width).</summary>
    private static string Flat(string text) => text.Replace("\r", "").Replace("\n", "");
}
