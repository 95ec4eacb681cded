namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// Writes a file through a temporary sibling that is renamed into place, so a failure (exception, full disk, killed
/// process) never leaves a half-written file under the final name. The rename replaces only what it may: a symlink
/// is followed and its final target written (the link stays a link); a device or FIFO (<c>/dev/null</c>, a pipe) is
/// written directly, since there is nothing to leave half-written and renaming would replace it with a regular file;
/// a folder is refused.
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write) => WriteAll([(path, write)]);

    /// <summary>
    /// Writes several files all or nothing: every file is written to its temporary sibling (and every device or FIFO
    /// written directly) before the first rename, so a failure in any of them leaves none renamed into place.
    /// </summary>
    /// <param name="label">Prefix of error messages (e.g. the option that named the paths); messages name the path after it.</param>
    public static void WriteAll(IReadOnlyList<(string Path, Action<FileStream> Write)> files, Func<string, string>? label = null)
    {
        string Named(string path) => label is null ? $"'{path}'" : $"{label(path)} '{path}'";
        var staged = new List<(string Temp, string Target)>();
        try
        {
            var direct = new List<(string Path, string Target, Action<FileStream> Write)>();
            foreach (var (path, write) in files)
            {
                string target = Target(path);
                switch (FileKinds.Of(target))
                {
                    case FileKind.Directory:
                        throw new IOException($"{Named(path)} is a folder, not a file");
                    case FileKind.Special:
                        direct.Add((path, target, write));
                        continue;
                }
                string folder = Path.GetDirectoryName(target) ?? throw new ArgumentException($"{Named(path)}: no parent folder", nameof(files));
                string temp = Path.Combine(folder, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");
                try
                {
                    Directory.CreateDirectory(folder);
                    staged.Add((temp, target));
                    using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
                    write(stream);
                    stream.Flush(flushToDisk: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // The system's message names the temporary file, which the user never asked for: name theirs.
                    throw new IOException($"{Named(path)}: {e.Message.Replace(temp, target, StringComparison.Ordinal)}", e);
                }
            }
            foreach (var (path, target, write) in direct)
                try
                {
                    using var stream = new FileStream(target, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1 << 16);
                    write(stream);
                    stream.Flush();
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new IOException($"{Named(path)}: {e.Message}", e);
                }
            for (int i = 0; i < staged.Count; i++)
            {
                File.Move(staged[i].Temp, staged[i].Target, overwrite: true);
                staged[i] = (staged[i].Temp, "");
            }
        }
        finally
        {
            foreach (var (temp, target) in staged)
                if (target.Length > 0) Delete(temp);
        }
    }

    /// <summary>
    /// Why <paramref name="path"/> could not be written as a file, or null when it can: a folder is refused, a device
    /// or FIFO is accepted as it is, otherwise the nearest existing folder on its way must take a new file (probed by
    /// creating and deleting one: this catches read-only mounts, immutable folders and missing permission).
    /// </summary>
    public static string? WhyNotWritable(string path)
    {
        string target;
        try { target = Target(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { return e.Message; }
        switch (FileKinds.Of(target))
        {
            case FileKind.Directory: return "is a folder, not a file";
            case FileKind.Special: return null;
        }
        string? folder = Path.GetDirectoryName(target);
        while (folder is not null && !Directory.Exists(folder))
        {
            if (File.Exists(folder)) return $"'{folder}' is a file, not a folder";
            folder = Path.GetDirectoryName(folder);
        }
        if (folder is null) return "no existing parent folder";
        string probe = Path.Combine(folder, $".rlhfspec-probe.{Guid.NewGuid():N}.tmp");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
            return null;
        }
        catch (UnauthorizedAccessException) { return $"no permission to create a file in '{folder}'"; }
        catch (IOException e) { return $"cannot create a file in '{folder}' ({e.Message.Replace($" '{probe}'", "", StringComparison.Ordinal).Replace(probe, folder, StringComparison.Ordinal).TrimEnd('.')})"; }
        finally { Delete(probe); }
    }

    /// <summary>The path with its symlinks followed to their final target (which may not exist yet).</summary>
    public static string Target(string path)
    {
        string full = Path.GetFullPath(path);
        var info = new FileInfo(full);
        return info.LinkTarget is null ? full : Path.GetFullPath(info.ResolveLinkTarget(returnFinalTarget: true)!.FullName);
    }

    private static void Delete(string temp)
    {
        try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
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
