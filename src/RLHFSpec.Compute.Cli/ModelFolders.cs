namespace RLHFSpec.Compute.Cli;

/// <summary>Which model folders a command uses: the ones given, else the embedded default models.</summary>
internal static class ModelFolders
{
    public static (string Policy, string? Draft) Resolve(string? model, string? draft, bool draftOptional = false)
    {
        if (model is null) throw new ArgumentException("--model: no model folder given");
        if (!Directory.Exists(model)) throw new DirectoryNotFoundException($"--model '{model}': no such folder");
        if (draft is not null && !Directory.Exists(draft)) throw new DirectoryNotFoundException($"--draft '{draft}': no such folder");
        return (model, draft);
    }
}
