using System.Globalization;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>How a run takes its folder.</summary>
public enum RunFolderMode
{
    /// <summary>A new run: the folder must be missing or empty.</summary>
    New,

    /// <summary>A new run that replaces the run already in the folder (only a run's own files are removed).</summary>
    Overwrite,

    /// <summary>Continue the run in the folder.</summary>
    Resume,
}

/// <summary>
/// The folder of one RLHF run, held for the run's whole life by an exclusive lock on <c>.lock</c> in it (a share-none
/// handle: <c>flock</c> on Unix, released by the kernel when the process dies, so a killed run leaves no stale lock).
/// The holder's process id is in <c>.lock.pid</c>, so a second run is refused with the folder and the holder named.
/// A run that fails to start removes what it created (<see cref="Abandon"/>), leaving the file system as it found it.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockFile = ".lock", OwnerFile = ".lock.pid";

    /// <summary>What a run writes at the top of its folder; anything else makes the folder not a run folder.</summary>
    private static readonly string[] RunEntries =
    [
        RlhfTrainer.ConfigFile, RlhfTrainer.MetricsFile, RlhfTrainer.PlotFile, RlhfTrainer.LatestFile,
        RlhfTrainer.CheckpointsFolder, RlhfTrainer.ReferenceFolder, RlhfTrainer.SummaryFile, HeldOutEvaluation.PromptsFile, EvaluationAnswers.Folder, LockFile, OwnerFile,
    ];

    private FileStream? _lock;
    private readonly bool _createdFolder;
    private readonly HashSet<string> _entriesBefore;
    private bool _replaced;

    private RunFolder(string path, RunFolderMode mode, string label, FileStream held, bool createdFolder, HashSet<string> entriesBefore)
    {
        (FullPath, Mode, Label, _lock, _createdFolder, _entriesBefore) = (path, mode, label, held, createdFolder, entriesBefore);
    }

    public string FullPath { get; }
    public RunFolderMode Mode { get; }

    /// <summary>How messages name the folder: the option it came from (<c>--out 'runs/a'</c>) or "run folder".</summary>
    public string Label { get; }

    public string File(string name) => Path.Combine(FullPath, name);

    /// <summary>Takes <paramref name="path"/> for a run: creates it if missing, locks it, and checks that the mode fits what is there.</summary>
    /// <param name="label">The option the path came from, for messages (e.g. <c>--out</c>).</param>
    public static RunFolder Open(string path, RunFolderMode mode, string label = "run folder") =>
        TryOpen(path, mode, label, out string? why) ?? throw new ArgumentException(why);

    /// <summary>A new run folder under <paramref name="parent"/> named by the UTC time, with <c>-2</c>, <c>-3</c>… when
    /// that name is taken, so two runs started in the same second never share one.</summary>
    public static RunFolder CreateUnique(string parent)
    {
        string stem = Path.Combine(parent, DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        for (int k = 1; k <= 1000; k++)
        {
            string candidate = k == 1 ? stem : $"{stem}-{k}";
            if (System.IO.File.Exists(candidate)) continue;
            if (TryOpen(candidate, RunFolderMode.New, "run folder", out _) is { } folder) return folder;
        }
        throw new IOException($"run folder: no free name '{stem}[-N]' under '{parent}'");
    }

    private static RunFolder? TryOpen(string path, RunFolderMode mode, string label, out string? why)
    {
        why = null;
        string full = Path.GetFullPath(path);
        string named = $"{label} '{path}'";
        if (System.IO.File.Exists(full)) { why = $"{named} is a file; a run folder is a folder (missing or empty for a new run)"; return null; }
        if (mode == RunFolderMode.Resume && !Directory.Exists(full)) throw new DirectoryNotFoundException($"{named}: no such folder");
        bool created = !Directory.Exists(full);
        var entries = created ? [] : Directory.EnumerateFileSystemEntries(full).Select(Path.GetFileName).OfType<string>().ToHashSet();
        FileStream held;
        try
        {
            Directory.CreateDirectory(full);
            held = new FileStream(Path.Combine(full, LockFile), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e) when (IsSharingViolation(e))
        {
            // Held by a live run. The folder is theirs: nothing here is removed.
            string owner = ReadOwner(full);
            why = $"{named} is in use by another run (process {owner}); wait for it to finish or choose another folder";
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            if (created) TryDelete(full);
            throw new IOException($"{named}: cannot create a run there: {e.Message}", e);
        }

        var others = entries.Where(e => e is not LockFile and not OwnerFile).ToList();
        var foreign = others.Where(e => !IsRunEntry(e)).Order(StringComparer.Ordinal).ToList();
        if (mode != RunFolderMode.Resume && others.Count > 0)
        {
            if (foreign.Count > 0)
                why = $"{named} is not empty and not a run folder (it holds '{foreign[0]}'{(foreign.Count > 1 ? $" and {foreign.Count - 1} more" : "")}); choose a new or empty folder";
            else if (mode == RunFolderMode.New)
                why = $"{named} already holds a run; continue it with --resume {path}, or replace it with --overwrite";
        }
        if (why is not null)
        {
            held.Dispose();
            if (!entries.Contains(LockFile)) TryDeleteFile(Path.Combine(full, LockFile));
            return null;
        }
        try
        {
            AtomicFile.WriteText(Path.Combine(full, OwnerFile), Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        }
        catch
        {
            held.Dispose();
            if (created) TryDelete(full);
            throw;
        }
        return new RunFolder(full, mode, label, held, created, entries);
    }

    /// <summary>
    /// Before the first write of a new run: with <see cref="RunFolderMode.Overwrite"/>, removes the old run's files
    /// (only names a run writes; <see cref="Open"/> refused folders holding anything else). Deferred to here so that a
    /// run that fails to start leaves the old run whole.
    /// </summary>
    public void PrepareForWriting()
    {
        if (Mode != RunFolderMode.Overwrite || _replaced) return;
        foreach (var entry in Directory.EnumerateFileSystemEntries(FullPath).ToList())
        {
            string name = Path.GetFileName(entry);
            if (name is LockFile or OwnerFile || !IsRunEntry(name)) continue;
            if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
            else System.IO.File.Delete(entry);
        }
        _entriesBefore.Clear();
        _entriesBefore.Add(LockFile);
        _entriesBefore.Add(OwnerFile);
        _replaced = true;
    }

    /// <summary>
    /// Removes what a killed run of this folder left half-done: temporary files and checkpoint folders
    /// (<c>.NAME.GUID.tmp</c>). A checkpoint caught between the two renames of a replacement (its old copy parked as
    /// <c>.NAME.GUID.old</c>, the name free) is put back; an <c>.old</c> whose name is taken is removed. Safe only
    /// under the lock: no live run writes here.
    /// </summary>
    public IReadOnlyList<string> RemoveStaleTemporaries()
    {
        var removed = new List<string>();
        foreach (var folder in new[] { FullPath, Path.Combine(FullPath, RlhfTrainer.CheckpointsFolder), Path.Combine(FullPath, EvaluationAnswers.Folder) })
        {
            if (!Directory.Exists(folder)) continue;
            foreach (var entry in Directory.EnumerateFileSystemEntries(folder).ToList())
            {
                string name = Path.GetFileName(entry);
                if (!name.StartsWith('.') || name is LockFile or OwnerFile) continue;
                if (name.EndsWith(".old", StringComparison.Ordinal) && Directory.Exists(entry) && ParkedName(name) is { } original
                    && !Directory.Exists(Path.Combine(folder, original)))
                {
                    Directory.Move(entry, Path.Combine(folder, original));
                    continue;
                }
                if (!name.EndsWith(".tmp", StringComparison.Ordinal) && !name.EndsWith(".old", StringComparison.Ordinal)) continue;
                if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
                else System.IO.File.Delete(entry);
                removed.Add(entry);
            }
        }
        return removed;
    }

    /// <summary>A run that failed to start: removes the folder if this run created it, else what it added to it.</summary>
    public void Abandon()
    {
        if (_lock is null) return;
        if (_createdFolder)
        {
            Dispose();
            TryDelete(FullPath);
            return;
        }
        foreach (var entry in Directory.EnumerateFileSystemEntries(FullPath).ToList())
        {
            string name = Path.GetFileName(entry);
            if (_entriesBefore.Contains(name) || name is LockFile or OwnerFile) continue;
            if (Directory.Exists(entry)) TryDelete(entry);
            else TryDeleteFile(entry);
        }
        bool lockWasThere = _entriesBefore.Contains(LockFile);
        Dispose();
        if (!lockWasThere) TryDeleteFile(Path.Combine(FullPath, LockFile));
    }

    public void Dispose()
    {
        if (_lock is null) return;
        TryDeleteFile(Path.Combine(FullPath, OwnerFile));
        _lock.Dispose();
        _lock = null;
    }

    private static bool IsRunEntry(string name) =>
        RunEntries.Contains(name) || (name.StartsWith('.') && (name.EndsWith(".tmp", StringComparison.Ordinal) || name.EndsWith(".old", StringComparison.Ordinal)));

    /// <summary>The name a parked folder <c>.NAME.GUID.old</c> had (see <see cref="AtomicFile.WriteFolder"/>).</summary>
    private static string? ParkedName(string parked)
    {
        string inner = parked[1..^".old".Length];
        int dot = inner.LastIndexOf('.');
        return dot > 0 ? inner[..dot] : null;
    }

    /// <summary>A share-none open refused because another handle holds the file (EWOULDBLOCK on Unix, ERROR_SHARING_VIOLATION on Windows).</summary>
    private static bool IsSharingViolation(IOException e) =>
        e is not (FileNotFoundException or DirectoryNotFoundException or PathTooLongException) && (e.HResult == 11 || (e.HResult & 0xFFFF) == 32);

    private static string ReadOwner(string folder)
    {
        try { return System.IO.File.ReadAllText(Path.Combine(folder, OwnerFile)).Trim() is { Length: > 0 } pid ? pid : "unknown"; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return "unknown"; }
    }

    private static void TryDelete(string folder)
    {
        try { if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true); }
        catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static void TryDeleteFile(string file)
    {
        try { System.IO.File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
