namespace RLHFSpec.Compute.Model.Formats;

/// <summary>Writes a file through a temporary sibling that is renamed into place, so a failure (exception, full disk,
/// killed process) never leaves a half-written file under the final name.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        string fullPath = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(fullPath) ?? throw new ArgumentException($"{path}: no parent folder", nameof(path));
        Directory.CreateDirectory(folder);
        string temp = Path.Combine(folder, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, fullPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    public static void WriteText(string path, string text) =>
        Write(path, s =>
        {
            var bytes = new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text);
            s.Write(bytes);
        });

    /// <summary>
    /// Writes a folder through a temporary sibling folder that <paramref name="fill"/> writes into, then renames it into
    /// place. An existing folder of that name stays whole until the new one has taken its name (two renames); a
    /// failure leaves the old folder, or none, and removes the temporary one.
    /// </summary>
    public static void WriteFolder(string folder, Action<string> fill)
    {
        string target = Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(target) ?? throw new ArgumentException($"{folder}: no parent folder", nameof(folder));
        Directory.CreateDirectory(parent);
        string name = Path.GetFileName(target);
        string temp = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(temp);
            fill(temp);
            if (Directory.Exists(target))
            {
                string old = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.old");
                Directory.Move(target, old);
                Directory.Move(temp, target);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(temp, target);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
