using System.Diagnostics;
using RLHFSpec.Compute.Model.Pretraining;

namespace RLHFSpec.Compute.Tests.Cli;

/// <summary>Runs the built <c>rlhfspec</c> CLI as a process (exit code, stdout, stderr), as a user would.</summary>
internal static class CliRunner
{
    private static readonly Lazy<string> Dll = new(() =>
    {
        string root = DefaultModels.FindRepositoryRoot(AppContext.BaseDirectory) ?? throw new InvalidOperationException("repository root not found");
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
        string dll = Path.Combine(root, "src", "RLHFSpec.Compute.Cli", "bin", configuration, "net10.0", "rlhfspec.dll");
        return File.Exists(dll) ? dll : throw new FileNotFoundException($"build the CLI first: {dll} is missing", dll);
    });

    /// <summary>The built CLI's <c>rlhfspec.dll</c> (for tests that manage the process themselves).</summary>
    public static string DllPath => Dll.Value;

    public static (int Exit, string Out, string Err) Run(string workingDirectory, params string[] args) =>
        RunWithEnvironment(workingDirectory, new Dictionary<string, string>(), args);

    /// <summary>As <see cref="Run"/>, with these environment variables set for the process (e.g. <c>RLHFSPEC_MODELS</c>).</summary>
    public static (int Exit, string Out, string Err) RunWithEnvironment(string workingDirectory, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        RunWithTimeout(workingDirectory, environment, TimeSpan.FromMinutes(3), args);

    /// <summary>As <see cref="RunWithEnvironment"/>, failing the test after <paramref name="timeout"/> instead of 3 minutes (runs that train for real).</summary>
    public static (int Exit, string Out, string Err) RunWithTimeout(string workingDirectory, IReadOnlyDictionary<string, string> environment, TimeSpan timeout, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory };
        info.ArgumentList.Add(Dll.Value);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["NO_COLOR"] = "1";
        foreach (var (name, value) in environment) info.Environment[name] = value;
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(entireProcessTree: true); Assert.Fail($"rlhfspec {string.Join(' ', args)} timed out after {timeout.TotalMinutes:F0} minutes"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>
    /// Saves a randomly initialised Llama-style model of the default task's tokenizer as an HF folder (the CLI tests'
    /// stand-in for the pretrained models); returns the folder.
    /// </summary>
    public static string SaveRandomModel(string folder, int hidden, int heads, int kvHeads, int intermediate, int maxPositions, int seed = 1, double std = 0.2)
    {
        var tokenizer = ArithmeticTokenizer.Create();
        var config = PretrainModelSpec.LlamaConfig(tokenizer, hidden, layers: 1, heads, kvHeads, intermediate, maxPositions);
        using var weights = RLHFSpec.Compute.Model.Transformer.TransformerWeights.Random(config, seed, std);
        RLHFSpec.Compute.Model.Formats.Checkpoint.Save(folder, config, weights.ToHostTensors(), tokenizer);
        return folder;
    }
}
