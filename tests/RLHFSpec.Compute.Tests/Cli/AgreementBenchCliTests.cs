using System.Globalization;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec bench agreement</c> as a process on small random models: the policy measured as its own draft agrees
/// fully (Σ min(p, q) = 1, argmax agreement 1), another model less, both over every response position of the same
/// rollouts; bad input → one line naming the option, exit 2.
/// </summary>
[TestFixture]
public sealed class AgreementBenchCliTests
{
    [Test]
    public void Agreement_of_each_draft_on_the_policys_rollouts()
    {
        using var folder = new FormatsTestFolder();
        string policy = CliRunner.SaveRandomModel(folder.File("policy"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 128);
        string other = CliRunner.SaveRandomModel(folder.File("other"), hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, maxPositions: 128, seed: 2);
        string markdown = folder.File("agreement.md");
        var (exit, stdout, stderr) = CliRunner.Run(folder.Path, "bench", "agreement", "--model", policy, "--drafts", policy, other, "--device", "cpu", "--threads", "1",
            "--num-prompts", "3", "--samples-per-prompt", "2", "--max-new-tokens", "12", "--markdown", markdown);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        var rows = File.ReadAllLines(markdown).Where(l => l.StartsWith("| ", StringComparison.Ordinal)).Skip(1).ToArray();
        Assert.That(rows, Has.Length.EqualTo(2), string.Join("\n", rows));
        var cells = rows.Select(r => r.Split('|', StringSplitOptions.TrimEntries)).ToArray();
        Assert.That(cells[0][1], Is.EqualTo(policy));
        Assert.That(cells[1][1], Is.EqualTo(other));
        int positions = int.Parse(cells[0][4], CultureInfo.InvariantCulture);
        Assert.That(positions, Is.GreaterThan(6), "every response position of the 6 rollouts");
        Assert.That(cells[1][4], Is.EqualTo(cells[0][4]), "both drafts are measured on the same rollouts");
        Assert.That((cells[0][5], cells[0][6]), Is.EqualTo(("1.000", "1.000")), "the policy as its own draft");
        Assert.That(double.Parse(cells[1][5], CultureInfo.InvariantCulture), Is.GreaterThan(0).And.LessThan(0.99), "another model agrees less");
        Assert.That(stdout, Does.Contain("rollouts: 3 default-task prompts × 2"));
    }

    [Test]
    public void Bad_input_is_one_line()
    {
        using var folder = new FormatsTestFolder();
        string policy = CliRunner.SaveRandomModel(folder.File("policy"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 128);
        foreach (var (args, expected) in new (string[], string)[]
        {
            (["--model", policy], "rlhfspec: error: --drafts: give the draft folders to measure (with --model there is no set to take them from)"),
            (["--model", policy, "--drafts", folder.File("nowhere")], $"rlhfspec: error: --drafts '{folder.File("nowhere")}': no such folder"),
            (["--model", policy, "--drafts", policy, "--temperature", "-1"], "rlhfspec: error: --temperature: -1, must be a finite number >= 0"),
        })
        {
            var (exit, _, stderr) = CliRunner.Run(folder.Path, ["bench", "agreement", .. args]);
            Assert.That(exit, Is.EqualTo(2), stderr);
            Assert.That(stderr.Trim(), Is.EqualTo(expected));
        }
    }
}
