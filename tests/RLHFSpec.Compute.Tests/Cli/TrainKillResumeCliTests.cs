using System.Diagnostics;
using RLHFSpec.Compute.Rlhf;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec train</c> killed with SIGKILL at random moments (during generation, training, a checkpoint write) and
/// resumed each time until it finishes ends with exactly the run an uninterrupted process writes: the same weights,
/// optimizer states, checkpoint state and metrics (timings aside). Explicit: about a minute here.
/// </summary>
[TestFixture]
[Explicit("kills train with SIGKILL several times, about a minute; its last result is in the README's reliability section")]
public sealed class TrainKillResumeCliTests
{
    [Test]
    public void A_run_killed_at_random_points_and_resumed_equals_the_uninterrupted_run([Values(1, 2)] int seed)
    {
        using var folder = new FormatsTestFolder();
        string policy = CliRunner.SaveRandomModel(folder.File("policy"), hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 128);
        string draft = CliRunner.SaveRandomModel(folder.File("draft"), hidden: 16, heads: 2, kvHeads: 2, intermediate: 32, maxPositions: 128, seed: 2);
        string[] Train(string run, params string[] more) =>
            ["train", "--out", run, "--policy", policy, "--draft", draft, "--speculation", "off", "--device", "cpu", "--iterations", "4",
                "--prompts-per-iteration", "4", "--samples-per-prompt", "4", "--max-new-tokens", "48", "--minibatch-size", "8",
                "--checkpoint-every", "1", "--kv-memory-mib", "16", "--eval-before-train", "false", "--eval-every", "0", "--seed", "11", .. more];

        string whole = folder.File("whole");
        var watch = Stopwatch.StartNew();
        var (exit, stdout, stderr) = CliRunner.Run(folder.Path, Train(whole));
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        double seconds = watch.Elapsed.TotalSeconds;

        string killed = folder.File("killed");
        var random = new Random(seed);
        int kills = 0, starts = 0;
        bool finished = false;
        string[] args = Train(killed);
        while (!finished && starts < 40)
        {
            starts++;
            // Most attempts are cut short at a random moment of the run (process start included); every fourth runs to its end.
            TimeSpan? killAfter = starts % 4 == 0 ? null : TimeSpan.FromSeconds(random.NextDouble() * seconds);
            var (code, killedNow, output) = RunAndKill(folder.Path, args, killAfter);
            if (killedNow)
            {
                kills++;
                // Continue the run; a run killed before its first checkpoint has nothing to continue: start it again.
                args = Directory.Exists(Path.Combine(killed, "checkpoints")) && RlhfTrainer.LatestCheckpoint(killed) is not null
                    ? ["train", "--resume", killed]
                    : Train(killed, "--overwrite");
                continue;
            }
            if (code == 2 && output.Contains("no checkpoint", StringComparison.Ordinal))
            {
                args = Train(killed, "--overwrite");
                continue;
            }
            // Killed after its last checkpoint: the run is complete, and a resume says so.
            if (code == 2 && output.Contains("already finished", StringComparison.Ordinal)) break;
            Assert.That(code, Is.EqualTo(0), $"start {starts}: {output}");
            finished = true;
        }
        Assert.That(finished || RlhfTrainer.LatestCheckpoint(killed) is not null, $"the run did not finish in {starts} starts");
        TestContext.Out.WriteLine($"seed {seed}: uninterrupted run {seconds:F1} s; {kills} kills with SIGKILL, {starts} starts");
        Assert.That(kills, Is.GreaterThan(0));
        var expected = TrainReproducibilityCliTests.Contents(whole);
        var actual = TrainReproducibilityCliTests.Contents(killed);
        Assert.That(actual.Keys, Is.EqualTo(expected.Keys), "the same files (no temporaries left)");
        foreach (var (name, content) in expected) Assert.That(actual[name], Is.EqualTo(content), name);
    }

    /// <summary>Runs the CLI; with <paramref name="killAfter"/>, SIGKILLs it then if it still runs. (exit code, killed, stderr + stdout)</summary>
    private static (int Exit, bool Killed, string Output) RunAndKill(string workingDirectory, string[] args, TimeSpan? killAfter)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory };
        info.ArgumentList.Add(CliRunner.DllPath);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["NO_COLOR"] = "1";
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        bool killed = false;
        if (killAfter is { } after && !p.WaitForExit(after))
        {
            p.Kill(); // SIGKILL on Unix
            killed = true;
        }
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(entireProcessTree: true); Assert.Fail($"rlhfspec {string.Join(' ', args)} timed out"); }
        return (p.ExitCode, killed, stderr.Result + stdout.Result);
    }
}
