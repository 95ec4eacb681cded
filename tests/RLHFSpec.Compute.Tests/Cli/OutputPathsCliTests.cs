using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// Output paths and execution providers as a user gets them wrong, the CLI run as a process: each is refused before
/// any work with one line naming the option and the path, exit 2, no stack trace; outputs written together are all or
/// nothing (a failing <c>--stats</c> leaves no <c>--out</c>).
/// </summary>
[TestFixture]
public sealed class OutputPathsCliTests
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

    private string[] Generate(params string[] more) =>
        ["generate", "--model", _model, "--device", "cpu", "--num-prompts", "2", "--samples-per-prompt", "1", "--max-new-tokens", "4", "--threads", "1", "--strategy", "off", .. more];

    private static string OneErrorLine(int exit, string stdout, string stderr)
    {
        Assert.That(exit, Is.EqualTo(2), stderr + stdout);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), stderr);
        Assert.That(lines[0], Does.StartWith("rlhfspec: error: "));
        Assert.That(stdout, Does.Not.Contain("policy"), "refused before any work (the model was not loaded)");
        return lines[0];
    }

    [TestCase("cuda")]
    [TestCase("dml")]
    public void An_execution_provider_this_build_lacks_is_one_line(string ep)
    {
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, Generate("--ep", ep));
        Assert.That(OneErrorLine(exit, stdout, stderr), Does.StartWith($"rlhfspec: error: --ep '{ep}': "));
        var (train, trainOut, trainErr) = CliRunner.Run(_folder.Path, "train", "--policy", _model, "--draft", "none", "--ep", ep, "--out", _folder.File($"run-{ep}"));
        Assert.That(OneErrorLine(train, trainOut, trainErr), Does.StartWith($"rlhfspec: error: --ep '{ep}': "));
        Assert.That(Directory.Exists(_folder.File($"run-{ep}")), Is.False);
    }

    [Test]
    public void Unwritable_outputs_are_refused_before_any_work()
    {
        string folder = _folder.File("a-folder");
        Directory.CreateDirectory(folder);
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, Generate("--out", folder));
        Assert.That(OneErrorLine(exit, stdout, stderr), Does.Contain($"--out '{folder}': is a folder"));

        // A location where no file can be created (here /proc; a read-only mount or an immutable folder alike).
        var (proc, procOut, procErr) = CliRunner.Run(_folder.Path, Generate("--out", _folder.File("out.jsonl"), "--stats", "/proc/rlhfspec-stats.json"));
        Assert.That(OneErrorLine(proc, procOut, procErr), Does.Contain("--stats '/proc/rlhfspec-stats.json': cannot create a file in '/proc'").And.Not.Contain(".tmp"));

        string file = _folder.File("a-file");
        File.WriteAllText(file, "x");
        var (under, underOut, underErr) = CliRunner.Run(_folder.Path, Generate("--out", Path.Combine(file, "out.jsonl")));
        Assert.That(OneErrorLine(under, underOut, underErr), Does.Contain("--out").And.Contain("is a file, not a folder"));

        string same = _folder.File("same.json");
        var (twice, twiceOut, twiceErr) = CliRunner.Run(_folder.Path, Generate("--out", same, "--stats", same));
        Assert.That(OneErrorLine(twice, twiceOut, twiceErr), Does.Contain($"--stats '{same}': is the same file as --out"));

        var (profile, profileOut, profileErr) = CliRunner.Run(_folder.Path, Generate("--cost-profile", folder));
        Assert.That(OneErrorLine(profile, profileOut, profileErr), Does.Contain($"--cost-profile '{folder}'"));

        var (bench, benchOut, benchErr) = CliRunner.Run(_folder.Path, "bench", "train", "--model", _model, "--draft", _model, "--plot", folder);
        Assert.That(OneErrorLine(bench, benchOut, benchErr), Does.Contain($"--plot '{folder}': is a folder"));
        Assert.That(File.Exists(same) || Directory.GetFileSystemEntries(folder).Length > 0, Is.False, "nothing was written");
    }

    [Test]
    public void A_failing_stats_file_leaves_no_out_file()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("/dev/full");
        string output = _folder.File("kept-out.jsonl");
        var (exit, _, stderr) = CliRunner.Run(_folder.Path, Generate("--out", output, "--stats", "/dev/full"));
        Assert.That(exit, Is.EqualTo(2), stderr);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(1), stderr);
        Assert.That(lines[0], Does.StartWith("rlhfspec: error: --stats '/dev/full': "));
        Assert.That(File.Exists(output), Is.False, "--out was not renamed into place");
        Assert.That(Directory.GetFiles(_folder.Path, "*.tmp"), Is.Empty, "no temporary file is left");
        Assert.That(FileKinds.Of("/dev/full"), Is.EqualTo(FileKind.Special));

        // Written through a symlink, to a device directly: the link and the device stay what they were.
        string target = _folder.File("real-out.jsonl"), link = _folder.File("link-out.jsonl");
        File.WriteAllText(target, "old");
        File.CreateSymbolicLink(link, target);
        var (ok, okOut, okErr) = CliRunner.Run(_folder.Path, Generate("--out", link, "--stats", "/dev/null"));
        Assert.That(ok, Is.EqualTo(0), okErr + okOut);
        Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo(target));
        Assert.That(File.ReadAllLines(target), Has.Length.EqualTo(2));
        Assert.That(FileKinds.Of("/dev/null"), Is.EqualTo(FileKind.Special));
    }
}
