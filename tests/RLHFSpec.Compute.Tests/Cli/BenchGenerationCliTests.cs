using System.Globalization;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec bench generation</c>'s forced batch-size sweep as a process on small random models: the Markdown file
/// has the throughput table and the time split of the decode steps (draft / verify forward / verify kernel / outside)
/// for every strategy at every forced size, each split's shares summing to 100 % (the plumbing; no speed is asserted).
/// </summary>
[TestFixture]
public sealed class BenchGenerationCliTests
{
    [Test]
    public void The_sweep_splits_each_forced_batch_s_decode_time()
    {
        using var folder = new FormatsTestFolder();
        string policy = CliRunner.SaveRandomModel(folder.File("policy"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 128);
        string draft = CliRunner.SaveRandomModel(folder.File("draft"), hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, maxPositions: 128, seed: 2);
        string markdown = folder.File("bench.md"), trace = folder.File("steps.csv");
        var (exit, stdout, stderr) = CliRunner.Run(folder.Path, "bench", "generation", "--model", policy, "--draft", draft, "--device", "cpu", "--threads", "1",
            "--num-prompts", "2", "--samples-per-prompt", "2", "--max-new-tokens", "6", "--strategies", "chain:2", "suffix:2",
            "--batch-sizes", "1", "3", "--sweep-tokens", "6", "--markdown", markdown, "--repeats", "2", "--trace", trace);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        var lines = File.ReadAllLines(markdown);
        // Two rounds: each strategy's ratio to off is the median of the rounds' ratios, with their range.
        var chain = lines.First(l => l.StartsWith("| chain:2 |", StringComparison.Ordinal)).Split('|', StringSplitOptions.TrimEntries);
        Assert.That(chain[5], Does.Match(@"^\d+\.\d\d× \(\d+\.\d\d–\d+\.\d\d×\)$"), string.Join("\n", lines));
        var sweepRow = lines.First(l => l.StartsWith("| 3 |", StringComparison.Ordinal)).Split('|', StringSplitOptions.TrimEntries);
        Assert.That(sweepRow[3], Does.Match(@"^\d+ \(\d+\.\d\d× \(\d+\.\d\d–\d+\.\d\d×\)\)$"), "the sweep's ratios are per round too");
        // The step trace names each run: the workload's rounds, then the sweep's strategy and forced size.
        var runs = File.ReadAllLines(trace).Skip(1).Select(l => l[..l.IndexOf("\",", 1, StringComparison.Ordinal)].Trim('"')).Distinct().ToArray();
        Assert.That(runs, Is.SupersetOf(new[] { "off round 1", "chain:2 round 1", "suffix:2 round 2", "off at batch 1 round 1", "chain:2 at batch 3 round 2" }), string.Join(", ", runs));
        int header = Array.FindIndex(lines, l => l.StartsWith("| forced batch | off: draft / verify forward / verify kernel / outside", StringComparison.Ordinal));
        Assert.That(header, Is.GreaterThan(0), string.Join("\n", lines));
        Assert.That(lines[header], Does.Contain("chain:2: draft / verify forward").And.Contain("suffix:2: draft / verify forward"));
        foreach (var (size, row) in new[] { ("1", lines[header + 2]), ("3", lines[header + 3]) })
        {
            var cells = row.Split('|', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            Assert.That(cells[0], Is.EqualTo(size), row);
            Assert.That(cells.Length, Is.EqualTo(4), row);
            foreach (var cell in cells.Skip(1))
            {
                var shares = cell.Split('/', StringSplitOptions.TrimEntries).Select(p => double.Parse(p.TrimEnd('%', ' '), CultureInfo.InvariantCulture)).ToArray();
                Assert.That(shares, Has.Length.EqualTo(4), cell);
                Assert.That(shares.Sum(), Is.EqualTo(100).Within(0.5), cell);
                Assert.That(shares[1], Is.GreaterThan(0), "the verify forward takes time: " + cell);
            }
        }
        Assert.That(stdout, Does.Contain("time split of the decode steps"));

        var (bad, _, badErr) = CliRunner.Run(folder.Path, "bench", "generation", "--model", policy, "--draft", draft, "--device", "cpu", "--repeats", "0");
        Assert.That(bad, Is.EqualTo(2));
        Assert.That(badErr, Does.Contain("--repeats"));
    }
}
