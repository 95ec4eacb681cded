using System.Text;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Cli;

/// <summary>
/// The files a command writes, checked before any work (a run must not spend minutes and then fail on its output)
/// and written all or nothing at the end; every failure is one line naming the option and the path.
/// </summary>
internal static class OutputPaths
{
    /// <summary>Each given output must be writable as a file, and no two may name the same file.</summary>
    public static void Check(params (string Option, string? Path)[] outputs)
    {
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (option, path) in outputs)
        {
            if (path is null) continue;
            if (AtomicFile.WhyNotWritable(path) is { } why) throw new ArgumentException($"{option} '{path}': {why}");
            string target = AtomicFile.Target(path);
            if (FileKinds.Of(target) != FileKind.Special && seen.TryGetValue(target, out var other))
                throw new ArgumentException($"{option} '{path}': is the same file as {other}; each output needs its own file");
            seen[target] = $"{option} '{path}'";
        }
    }

    /// <summary>Writes the given texts all or nothing (see <see cref="AtomicFile.WriteAll"/>).</summary>
    public static void WriteAll(params (string Option, string? Path, string Text)[] files)
    {
        var given = files.Where(f => f.Path is not null).ToList();
        var options = given.ToDictionary(f => f.Path!, f => f.Option, StringComparer.Ordinal);
        var encoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false);
        AtomicFile.WriteAll(given.Select(f => (f.Path!, (Action<FileStream>)(s => s.Write(encoding.GetBytes(f.Text))))).ToList(),
            path => options[path]);
    }
}
