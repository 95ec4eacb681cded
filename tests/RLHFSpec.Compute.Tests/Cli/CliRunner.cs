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

    public static (int Exit, string Out, string Err) Run(string workingDirectory, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workingDirectory };
        info.ArgumentList.Add(Dll.Value);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["NO_COLOR"] = "1";
        using var p = Process.Start(info)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(entireProcessTree: true); Assert.Fail($"rlhfspec {string.Join(' ', args)} timed out"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
