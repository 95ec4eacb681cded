using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec bench train</c> as a process on small random models, tiny: both sides run, the Markdown table has a
/// row per stage and the end-to-end row, the plot is written (the plumbing only: no speed is asserted); bad input →
/// one line naming the option, exit 2.
/// </summary>
[TestFixture]
public sealed class BenchTrainCliTests
{
    [Test]
    public void Bench_train_compares_both_sides_per_stage_and_refuses_bad_input()
    {
        using var folder = new FormatsTestFolder();
        string policy = CliRunner.SaveRandomModel(folder.File("policy"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 128);
        string draft = CliRunner.SaveRandomModel(folder.File("draft"), hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, maxPositions: 128, seed: 2);
        string markdown = folder.File("bench.md"), plot = folder.File("bench.png");
        var (exit, stdout, stderr) = CliRunner.Run(folder.Path, "bench", "train", "--model", policy, "--draft", draft, "--device", "cpu", "--threads", "1",
            "--iterations", "2", "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "6", "--markdown", markdown, "--plot", plot);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        var rows = File.ReadAllLines(markdown);
        foreach (var (stage, i) in new[] { "generation", "inference", "training", "draft_refresh", "**end to end**" }.Select((s, i) => (s, i)))
            Assert.That(rows[2 + i], Does.StartWith($"| {stage} |"), string.Join("\n", rows));
        Assert.That(rows[6], Does.EndWith("× |"), "the end-to-end ratio");
        Assert.That(new FileInfo(plot).Length, Is.GreaterThan(1000), "a PNG");
        Assert.That(stdout, Does.Contain("mission iter 2"));
        Assert.That(stdout, Does.Contain("distilled in").And.Contain("draft_refresh_tolerance 0.02"), "the summary line says how often the draft was distilled");
        Assert.That(stdout, Does.Contain("the draft's part of the refresh"), "and what the draft's part of the refresh cost");

        // One instance: speculation and the draft refresh without reallocation (nothing to move samples to).
        var (single, singleOut, singleErr) = CliRunner.Run(folder.Path, "bench", "train", "--model", policy, "--draft", draft, "--device", "cpu", "--threads", "1",
            "--iterations", "1", "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "6", "--instances", "1");
        Assert.That(single, Is.EqualTo(0), singleErr + singleOut);
        Assert.That(singleOut, Does.Contain("--speculation adaptive --reallocate off --instances 1"));
        Assert.That(singleOut, Does.Contain("mission iter 1"));

        var (bad, _, error) = CliRunner.Run(folder.Path, "bench", "train", "--model", policy, "--draft", draft, "--instances", "0");
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("rlhfspec: error: --instances: 0"));
        var (badTolerance, _, toleranceError) = CliRunner.Run(folder.Path, "bench", "train", "--model", policy, "--draft", draft, "--draft-refresh-tolerance", "2");
        Assert.That(badTolerance, Is.EqualTo(2));
        Assert.That(toleranceError.Trim(), Does.StartWith("rlhfspec: error: --draft-refresh-tolerance: 2"));
    }
}
