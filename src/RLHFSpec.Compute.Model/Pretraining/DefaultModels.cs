using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// The default models folder and its contents (policy, draft-small, draft-tiny and pretrain.json, written by
/// <see cref="Pretrainer"/>). The folder is <c>$RLHFSPEC_MODELS</c> when set, else <c>models/</c> at the repository
/// root (the nearest folder above the working directory or the program holding RLHFSpec.Compute.sln), else
/// <c>~/.cache/rlhfspec/models</c>.
/// </summary>
public static class DefaultModels
{
    public const string EnvironmentVariable = "RLHFSPEC_MODELS";
    public const string SolutionFileName = "RLHFSpec.Compute.sln";
    public const string FolderName = "models";

    /// <summary>Folder names of the models the main job needs, policy first.</summary>
    public static IReadOnlyList<string> ModelNames { get; } = new[] { Pretrainer.PolicyName, Pretrainer.DraftSmallName, Pretrainer.DraftTinyName };

    /// <summary>The default models folder for this process (see the class remarks).</summary>
    public static string Folder =>
        Resolve(Environment.GetEnvironmentVariable(EnvironmentVariable), Directory.GetCurrentDirectory(), AppContext.BaseDirectory);

    /// <summary>The folder given an override (null or empty: none) and the folders to search upwards from.</summary>
    public static string Resolve(string? overrideFolder, params string[] searchFrom)
    {
        if (!string.IsNullOrWhiteSpace(overrideFolder)) return Path.GetFullPath(overrideFolder);
        foreach (var start in searchFrom)
            if (FindRepositoryRoot(start) is { } root) return Path.Combine(root, FolderName);
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(home)) home = Path.GetTempPath();
        return Path.Combine(home, ".cache", "rlhfspec", FolderName);
    }

    /// <summary>The nearest folder at or above <paramref name="start"/> holding <see cref="SolutionFileName"/>, or null.</summary>
    public static string? FindRepositoryRoot(string start)
    {
        if (string.IsNullOrEmpty(start)) return null;
        for (var dir = new DirectoryInfo(Path.GetFullPath(start)); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, SolutionFileName))) return dir.FullName;
        return null;
    }

    /// <summary>The name of the default model set (the folder <see cref="Folder"/> itself).</summary>
    public const string DefaultSetName = "default";

    /// <summary>The model sets a command may name (<c>--set</c>, <c>--model-set</c>), the default first.</summary>
    public static IReadOnlyList<string> SetNames { get; } = [DefaultSetName, Pretrainer.MediumSetName];

    /// <summary>The folder of a named model set: the default set's folder itself for null or "default", else a sub-folder of it.</summary>
    public static string SetFolder(string defaultFolder, string? set) =>
        set is null or DefaultSetName ? defaultFolder
        : set == Pretrainer.MediumSetName ? Path.Combine(defaultFolder, Pretrainer.MediumSetName)
        : throw new ArgumentException($"--set {set}: no such model set (sets: default, {Pretrainer.MediumSetName})");

    public static string PolicyFolder(string folder) => Path.Combine(folder, Pretrainer.PolicyName);

    /// <summary>
    /// The draft commands use with the set in <paramref name="folder"/> when none is given: the one its
    /// <see cref="SetDraftChoice.FileName"/> chose by measurement, else <see cref="Pretrainer.DefaultDraftName"/>.
    /// InvalidDataException naming the file when it is unreadable or names a draft the set does not hold.
    /// </summary>
    public static string SetDraftName(string folder, string? set)
    {
        if (SetDraftChoice.TryLoad(folder) is not { } choice) return Pretrainer.DefaultDraftName(set);
        if (!HasModel(folder, choice.Draft))
            throw new InvalidDataException($"{Path.Combine(folder, SetDraftChoice.FileName)}: draft '{choice.Draft}' is not a model of the set");
        return choice.Draft;
    }
    public static string DraftFolder(string folder, string name) => Path.Combine(folder, name);

    /// <summary>Whether <paramref name="folder"/> holds a model named <paramref name="name"/> (its config.json).</summary>
    public static bool HasModel(string folder, string name) => File.Exists(Path.Combine(folder, name, ModelConfig.FileName));

    /// <summary>The drafts of <see cref="Pretrainer.DraftNames"/> the set in <paramref name="folder"/> holds, in that order.</summary>
    public static string[] DraftsIn(string folder) => Pretrainer.DraftNames.Where(n => HasModel(folder, n)).ToArray();

    /// <summary>
    /// Whether a complete set is there: pretrain.json (written last) naming every model of <see cref="ModelNames"/>
    /// and the current <see cref="Tasks.ArithmeticTask.Version"/>, and each model's config.json. A damaged summary, or
    /// models pretrained for another version of the task, count as missing.
    /// </summary>
    public static bool Exists(string folder)
    {
        if (!File.Exists(Path.Combine(folder, PretrainSummary.FileName))) return false;
        PretrainSummary summary;
        try { summary = PretrainSummary.Load(folder); }
        catch (InvalidDataException) { return false; }
        if (summary.Task != Tasks.ArithmeticTask.Version) return false;
        return ModelNames.All(n => summary.Models.Any(m => m.Name == n) && HasModel(folder, n));
    }

    /// <summary>
    /// Pretrains the default models into <paramref name="folder"/> (default <see cref="Folder"/>) unless a complete
    /// set is already there; returns the folder. Takes about 4 minutes on 2 idle CPU cores when it trains.
    /// </summary>
    public static string EnsureCreated(IProgress<PretrainProgress>? progress = null, string? folder = null,
        PretrainOptions? options = null, CancellationToken cancellation = default)
    {
        folder ??= Folder;
        if (Exists(folder)) return folder;
        var run = (options ?? new PretrainOptions()) with { PolicyOnly = false, Models = null };
        Pretrainer.Run(folder, run, progress, cancellation);
        return folder;
    }
}
