using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>
/// <c>rlhfspec generate</c> as a process on a small random model: a good run writes one JSONL line per sample and
/// the stats JSON; bad input (empty prompts file, a line without <c>prompt</c>, non-UTF-8 text, a prompt longer than
/// the context, an unknown strategy) gives one clear line on stderr, exit code 2, and no output file.
/// </summary>
[TestFixture]
public sealed class GenerateCliTests
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

    private string[] Args(string output, params string[] more) =>
        ["generate", "--model", _model, "--device", "cpu", "--num-prompts", "3", "--samples-per-prompt", "2", "--max-new-tokens", "12", "--threads", "1", "--out", output, .. more];

    [Test]
    public void A_run_writes_one_line_per_sample_and_the_stats()
    {
        string output = _folder.File("out.jsonl"), stats = _folder.File("stats.json");
        var (exit, stdout, stderr) = CliRunner.Run(_folder.Path, Args(output, "--stats", stats, "--strategy", "suffix:3", "--temperature", "0.7", "--seed", "4"));
        Assert.That(exit, Is.EqualTo(0), stderr + stdout);
        var lines = File.ReadAllLines(output);
        Assert.That(lines, Has.Length.EqualTo(6));
        foreach (var line in lines)
        {
            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            foreach (var field in new[] { "prompt_index", "sample_index", "prompt", "tokens", "text", "finish_reason" })
                Assert.That(r.TryGetProperty(field, out _), $"field {field} in {line}");
            Assert.That(r.GetProperty("tokens").GetArrayLength(), Is.InRange(1, 12));
        }
        using var s = JsonDocument.Parse(File.ReadAllText(stats));
        foreach (var field in new[] { "total_tokens", "wall_seconds", "tokens_per_second", "steps", "mean_accepted_per_step", "strategy_histogram", "strategy_seconds", "by_batch_size" })
            Assert.That(s.RootElement.TryGetProperty(field, out _), $"stats field {field}");
        // Prefill: prompt tokens over prefill seconds; decode: tokens of decode steps (all but each sample's first)
        // over the decode steps' seconds.
        var root = s.RootElement;
        var seconds = root.GetProperty("seconds");
        var prompts = lines.Select(l => { using var d = JsonDocument.Parse(l); return d.RootElement.GetProperty("prompt").GetString()!; }).ToArray();
        // Samples of one prompt prefill it once (the others copy its KV): one token per character of each distinct prompt.
        long promptTokens = prompts.Distinct().Sum(p => (long)p.Length);
        Assert.That(root.GetProperty("prefill_tokens").GetInt64(), Is.EqualTo(promptTokens), "one token per character of each distinct prompt");
        Assert.That(root.GetProperty("shared_prefill_tokens").GetInt64(), Is.EqualTo(prompts.Sum(p => (long)p.Length) - promptTokens), "the other samples' prompts are copied");
        Assert.That(root.GetProperty("prefill_tokens_per_second").GetDouble(),
            Is.EqualTo(promptTokens / seconds.GetProperty("prefill").GetDouble()).Within(1e-6).Percent);
        long decodeTokens = root.GetProperty("total_tokens").GetInt64() - lines.Length;
        Assert.That(root.GetProperty("decode_tokens").GetInt64(), Is.EqualTo(decodeTokens));
        Assert.That(seconds.GetProperty("decode").GetDouble(), Is.GreaterThan(0).And.LessThan(root.GetProperty("wall_seconds").GetDouble()));
        Assert.That(root.GetProperty("decode_tokens_per_second").GetDouble(),
            Is.EqualTo(decodeTokens / seconds.GetProperty("decode").GetDouble()).Within(1e-6).Percent);
        var again = _folder.File("again.jsonl");
        Assert.That(CliRunner.Run(_folder.Path, Args(again, "--strategy", "suffix:3", "--temperature", "0.7", "--seed", "4")).Exit, Is.EqualTo(0));
        Assert.That(File.ReadAllLines(again), Is.EqualTo(lines), "same seed and strategy, same output");
    }

    [Test]
    public void Two_instances_with_reallocation_give_the_greedy_output_of_one()
    {
        string one = _folder.File("one.jsonl"), two = _folder.File("two.jsonl"), stats = _folder.File("two.json"), trace = _folder.File("two-steps.csv");
        var (exit1, _, err1) = CliRunner.Run(_folder.Path, Args(one, "--strategy", "suffix:3", "--temperature", "0"));
        Assert.That(exit1, Is.EqualTo(0), err1);
        var (exit2, out2, err2) = CliRunner.Run(_folder.Path, Args(two, "--strategy", "suffix:3", "--temperature", "0", "--instances", "2", "--reallocate", "on", "--stats", stats, "--trace", trace));
        Assert.That(exit2, Is.EqualTo(0), err2 + out2);
        Assert.That(File.ReadAllLines(two), Is.EqualTo(File.ReadAllLines(one)));
        using var s = JsonDocument.Parse(File.ReadAllText(stats));
        Assert.That(s.RootElement.GetProperty("instances").GetInt32(), Is.EqualTo(2));
        Assert.That(s.RootElement.GetProperty("per_instance").GetArrayLength(), Is.EqualTo(2));
        // The step trace: a row per decode step of each instance, named by the instance's number.
        var steps = File.ReadAllLines(trace);
        Assert.That(steps[0], Does.StartWith("run,instance,step,strategy,"));
        Assert.That(steps.Skip(1).Select(l => l.Split(',')[1]).Distinct().Order(), Is.EqualTo(new[] { "0", "1" }));
        Assert.That(steps.Skip(1).Sum(l => long.Parse(l.Split(',')[8])), Is.EqualTo(s.RootElement.GetProperty("total_tokens").GetInt64() - 6), "every token but each sample's first is a step's");
        Assert.That(s.RootElement.TryGetProperty("migrations", out _) && s.RootElement.TryGetProperty("kv_bytes_moved", out _) && s.RootElement.TryGetProperty("recomputes", out _));
        var (exit3, _, err3) = CliRunner.Run(_folder.Path, Args(_folder.File("bad.jsonl"), "--instances", "2", "--reallocate", "maybe"));
        Assert.That(exit3, Is.EqualTo(2));
        Assert.That(err3, Does.Contain("--reallocate"));
    }

    // --kv-dtype f16 keeps the K/V in half precision: greedy speculative output still equals greedy off under it
    // (every strategy reads the same rounded cache), and a value other than f32/f16 is one line, exit 2, no output.
    [Test]
    public void A_half_precision_kv_cache_keeps_greedy_strategies_equal_and_a_bad_type_is_one_line()
    {
        string off = _folder.File("kv16-off.jsonl"), chain = _folder.File("kv16-suffix.jsonl"), bad = _folder.File("kv-bad.jsonl");
        var (exit1, out1, err1) = CliRunner.Run(_folder.Path, Args(off, "--kv-dtype", "f16", "--strategy", "off", "--temperature", "0"));
        Assert.That(exit1, Is.EqualTo(0), err1 + out1);
        var (exit2, out2, err2) = CliRunner.Run(_folder.Path, Args(chain, "--kv-dtype", "f16", "--strategy", "suffix:3", "--temperature", "0"));
        Assert.That(exit2, Is.EqualTo(0), err2 + out2);
        Assert.That(File.ReadAllLines(chain), Is.EqualTo(File.ReadAllLines(off)));
        var (exit3, out3, err3) = CliRunner.Run(_folder.Path, Args(bad, "--kv-dtype", "f8"));
        Assert.That(exit3, Is.EqualTo(2), out3);
        Assert.That(err3.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(err3, Does.Contain("--kv-dtype 'f8': not one of f32, f16"));
        Assert.That(File.Exists(bad), Is.False);
    }

    // --draft none means no draft model, as train's draft = "none" does: the suffix proposer still runs, and the
    // greedy output is plain greedy decoding's (speculation never changes it).
    [Test]
    public void Draft_none_runs_without_a_draft_model()
    {
        string none = _folder.File("draft-none.jsonl"), plain = _folder.File("draft-plain.jsonl");
        var (exit1, _, err1) = CliRunner.Run(_folder.Path, Args(none, "--strategy", "suffix:3", "--temperature", "0", "--draft", "none"));
        Assert.That(exit1, Is.EqualTo(0), err1);
        var (exit2, _, err2) = CliRunner.Run(_folder.Path, Args(plain, "--strategy", "off", "--temperature", "0"));
        Assert.That(exit2, Is.EqualTo(0), err2);
        Assert.That(File.ReadAllLines(none), Is.EqualTo(File.ReadAllLines(plain)));
    }

    [Test]
    public void Both_dense_executors_give_the_same_greedy_output_and_a_bad_one_is_refused()
    {
        string managed = _folder.File("managed.jsonl"), onnx = _folder.File("onnx.jsonl");
        var (exit1, _, err1) = CliRunner.Run(_folder.Path, Args(managed, "--strategy", "suffix:3", "--temperature", "0", "--dense", "managed"));
        Assert.That(exit1, Is.EqualTo(0), err1);
        var (exit2, _, err2) = CliRunner.Run(_folder.Path, Args(onnx, "--strategy", "suffix:3", "--temperature", "0", "--dense", "onnx"));
        Assert.That(exit2, Is.EqualTo(0), err2);
        Assert.That(File.ReadAllLines(onnx), Is.EqualTo(File.ReadAllLines(managed)));
        string bad = _folder.File("bad-dense.jsonl");
        var (exit3, out3, err3) = CliRunner.Run(_folder.Path, Args(bad, "--dense", "fast"));
        Assert.That(exit3, Is.EqualTo(2), out3);
        Assert.That(err3, Does.Contain("--dense 'fast': not one of auto, onnx, managed"));
        Assert.That(err3, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(File.Exists(bad), Is.False);
    }

    /// <summary>
    /// <c>--dense vulkan --device vulkan</c> (the whole step on the device) decodes the CPU run's greedy tokens, plain
    /// and speculative; without a Vulkan device it is one clear error, exit 2.
    /// </summary>
    [Test]
    public void Vulkan_dense_gives_the_cpu_greedy_output_and_needs_a_vulkan_device()
    {
        _ = Backends.Vulkan;   // ignored (or failed when required) without a Vulkan driver
        string cpu = _folder.File("cpu-greedy.jsonl");
        var (exit, output, err) = CliRunner.Run(_folder.Path, Args(cpu, "--strategy", "off", "--temperature", "0"));
        Assert.That(exit, Is.EqualTo(0), err);
        Assert.That(Unwrapped(output), Does.Contain("dense managed (auto: generation runs on the CPU backend"), "the startup line says what --dense auto chose and why");
        foreach (var strategy in new[] { "off", "suffix:3" })
        {
            string vk = _folder.File($"vulkan-{strategy.Replace(':', '-')}.jsonl");
            var args = Args(vk, "--strategy", strategy, "--temperature", "0", "--dense", "vulkan");
            args[Array.IndexOf(args, "--device") + 1] = "vulkan";
            var (exitVk, outVk, errVk) = CliRunner.Run(_folder.Path, args);
            Assert.That(exitVk, Is.EqualTo(0), errVk + outVk);
            Assert.That(File.ReadAllLines(vk), Is.EqualTo(File.ReadAllLines(cpu)), $"strategy {strategy}");
            Assert.That(Unwrapped(outVk), Does.Contain("dense vulkan (--dense vulkan)"));
        }
        string bad = _folder.File("vulkan-on-cpu.jsonl");
        var (exitBad, outBad, errBad) = CliRunner.Run(_folder.Path, Args(bad, "--dense", "vulkan"));
        Assert.That(exitBad, Is.EqualTo(2), outBad);
        Assert.That(errBad, Does.Contain("--dense vulkan").And.Contain("--device vulkan"));
        Assert.That(errBad, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(File.Exists(bad), Is.False);
    }

    /// <summary>The console output with the terminal's line wrapping undone.</summary>
    private static string Unwrapped(string output) => output.Replace("\r", "").Replace("\n", "");

    [TestCase("empty", "no prompts")]
    [TestCase("no-field", "line 2: no \"prompt\" field")]
    [TestCase("not-utf8", "not valid UTF-8")]
    [TestCase("too-long", "context")]
    [TestCase("strategy", "--strategy")]
    [TestCase("unknown-char", "prompt 1: character ' ' (U+0020) at offset 1 is not in the tokenizer's vocabulary")]
    public void Bad_input_gives_one_clear_error_and_no_output_file(string problem, string message)
    {
        string prompts = _folder.File($"{problem}.jsonl"), output = _folder.File($"{problem}.out.jsonl");
        switch (problem)
        {
            case "empty": File.WriteAllText(prompts, "\n\n"); break;
            case "no-field": File.WriteAllText(prompts, "{\"prompt\": \"1+2=\"}\n{\"text\": \"3+4=\"}\n"); break;
            case "not-utf8": File.WriteAllBytes(prompts, [.. "{\"prompt\": \"1+"u8, 0xff, 0xfe, .. "=\"}\n"u8]); break;
            case "unknown-char": File.WriteAllText(prompts, "{\"prompt\": \"1+2=\"}\n{\"prompt\": \"3 + 4 =\"}\n"); break;
            case "too-long": File.WriteAllText(prompts, JsonSerializer.Serialize(new { prompt = string.Join("+", Enumerable.Repeat("12", 40)) + "=" }) + "\n"); break;
            default: File.WriteAllText(prompts, "{\"prompt\": \"1+2=\"}\n"); break;
        }
        var args = Args(output, "--prompts", prompts, "--strategy", problem == "strategy" ? "chian:3" : "off");
        var (exit, _, stderr) = CliRunner.Run(_folder.Path, args);
        Assert.That(exit, Is.EqualTo(2), stderr);
        var errorLines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(errorLines, Has.Length.EqualTo(1), stderr);
        Assert.That(errorLines[0], Does.StartWith("rlhfspec: error:").And.Contain(message));
        Assert.That(File.Exists(output), Is.False, "no partial output");
    }
}
