namespace RLHFSpec.Compute.Tests.Model;

/// <summary>A unique temporary folder per test, deleted afterwards.</summary>
internal sealed class FormatsTestFolder : IDisposable
{
    public FormatsTestFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "rlhfspec-formats-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}
