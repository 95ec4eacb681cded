using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary><c>rlhfspec bench peer</c> end to end on a small random model: it exports, runs llama.cpp and ours, checks tokens and writes the table.</summary>
[TestFixture]
public sealed class PeerBenchCliTests
{
    [Test]
    public void Peer_bench_runs_both_runtimes_and_finds_the_same_tokens()
    {
        using var dir = new FormatsTestFolder();
        string model = CliRunner.SaveRandomModel(Path.Combine(dir.Path, "m"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 48, maxPositions: 128, std: 0.3);
        string md = Path.Combine(dir.Path, "peer.md");
        // A private temporary folder: the check below must see this run's leftovers only, not another run's.
        string tmp = Directory.CreateDirectory(Path.Combine(dir.Path, "tmp")).FullName;
        var (exit, stdout, stderr) = CliRunner.RunWithEnvironment(dir.Path, new Dictionary<string, string> { ["TMPDIR"] = tmp }, "bench", "peer", "--model", model, "--batch-sizes", "1", "3", "--prompt-terms", "4",
            "--new-tokens", "12", "--repeats", "2", "--threads", "1", "--dense", "onnx", "managed", "--markdown", md);
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        Assert.That(stdout, Does.Contain("decoded exactly our tokens at every batch size"));
        var table = File.ReadAllText(md);
        Assert.That(table, Does.Contain("| batch | ours | prefill ours |"));
        Assert.That(table, Does.Contain("| 3 | dense managed |"));
        foreach (var runtime in new[] { "ours (strategy off, dense onnx)", "ours (strategy off, dense managed)", "flash attention off, KV f16", "flash attention off, KV f32", "flash attention on, KV f16", "flash attention on, KV f32" })
            Assert.That(table, Does.Contain($"| 3 | {(runtime.StartsWith("ours", StringComparison.Ordinal) ? runtime : "llama.cpp, " + runtime)} |"), runtime);
        Assert.That(Directory.GetFiles(tmp, "rlhfspec-peer-*.gguf"), Is.Empty, "the temporary GGUF is removed");

        foreach (var (args, name) in new (string[], string)[]
        {
            (["bench", "peer", "--model", model, "--batch-sizes", "0"], "--batch-sizes"),
            (["bench", "peer", "--model", model, "--dense", "fast"], "--dense"),
            (["bench", "peer", "--model", model, "--new-tokens", "1"], "--new-tokens"),
            (["bench", "peer", "--model", model, "--new-tokens", "500"], "--new-tokens"),
            (["bench", "peer", "--model", Path.Combine(dir.Path, "none")], "--model"),
        })
        {
            var (e, _, err) = CliRunner.Run(dir.Path, args);
            Assert.That(e, Is.EqualTo(2), string.Join(' ', args));
            Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), err);
            Assert.That(err, Does.Contain(name));
        }
    }
}
