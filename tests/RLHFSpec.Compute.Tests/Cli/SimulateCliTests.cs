using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec simulate</c> as a process: a table of static vs reallocated completion per instance count; with
/// <c>--validate</c>, real runs on a small random model beside the simulator's prediction (the plumbing only: no
/// speed is asserted); bad input → one line, exit 2.
/// </summary>
[TestFixture]
public sealed class SimulateCliTests
{
    [Test]
    public void Simulate_reports_static_and_reallocated_completion_and_refuses_bad_input()
    {
        using var folder = new FormatsTestFolder();
        var cost = new CostModel("test");
        foreach (int n in new[] { 1, 16, 64, 256 }) { cost.ObserveVerify(n, 0, 2e-3 + 1e-5 * n); cost.ObserveDraftForward(n, 4e-4 + 1e-6 * n); }
        cost.ObserveSuffix(1, 1e-5);
        var profile = folder.File("cost.json");
        cost.Save(profile);
        var lengths = folder.File("lengths.jsonl");
        File.WriteAllLines(lengths, Enumerable.Range(0, 40).Select(i => $"{{\"prompt_tokens\": 8, \"tokens\": [{string.Join(",", Enumerable.Repeat(1, i % 10 == 0 ? 300 : 12))}]}}"));
        var markdown = folder.File("sim.md");
        var (exit, stdout, stderr) = CliRunner.Run(folder.Path, "simulate", "--cost-profile", profile, "--instances", "2", "4", "--samples-per-instance", "8",
            "--lengths", lengths, "--markdown", markdown);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        var rows = File.ReadAllLines(markdown);
        Assert.That(rows, Has.Length.EqualTo(4), "header, rule, one row per instance count");
        Assert.That(rows[2], Does.StartWith("| 2 | 16 |"));
        Assert.That(rows[3], Does.StartWith("| 4 | 32 |"));

        var (bad, _, error) = CliRunner.Run(folder.Path, "simulate", "--cost-profile", folder.File("missing.json"));
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("rlhfspec: error:").And.Contain("missing.json"));
        var (bad2, _, error2) = CliRunner.Run(folder.Path, "simulate", "--cost-profile", profile, "--instances", "0");
        Assert.That(bad2, Is.EqualTo(2));
        Assert.That(error2, Does.Contain("--instances"));
    }

    [Test]
    public void Validate_runs_real_instances_and_sets_the_prediction_beside_them()
    {
        using var folder = new FormatsTestFolder();
        var model = CliRunner.SaveRandomModel(folder.File("model"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 64);
        var markdown = folder.File("validate.md");
        var profile = folder.File("cost.json");
        var (exit, stdout, stderr) = CliRunner.Run(folder.Path, "simulate", "--validate", "--model", model, "--device", "cpu", "--threads", "1", "--num-prompts", "3",
            "--samples-per-prompt", "2", "--max-new-tokens", "10", "--repeats", "1", "--cost-profile", profile, "--markdown", markdown);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(File.Exists(profile), "the measured profile is saved for the next run");
        var rows = File.ReadAllLines(markdown);
        Assert.That(rows[2], Does.StartWith("| static |"));
        Assert.That(rows[3], Does.StartWith("| reallocated |"));
        foreach (var row in rows[2..4])
        {
            var cells = row.Split('|', StringSplitOptions.TrimEntries);
            Assert.That(double.Parse(cells[2], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThan(0), row);
            Assert.That(double.Parse(cells[3], System.Globalization.CultureInfo.InvariantCulture), Is.GreaterThanOrEqualTo(0), row);
            Assert.That(cells[4], Does.Match(@"^[+-]\d+\.\d%$"), row);
        }
        Assert.That(stdout, Does.Contain("relative error"));

        var (bad, _, error) = CliRunner.Run(folder.Path, "simulate", "--validate", "--model", model, "--instances", "2", "4");
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("rlhfspec: error: --instances"));
    }
}
