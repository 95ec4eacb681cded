using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary><c>rlhfspec simulate</c> as a process: a table of static vs reallocated completion per instance count; bad input → one line, exit 2.</summary>
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
}
