using RLHFSpec.Compute.Cli.Commands;
using RLHFSpec.Compute.Model.Pretraining;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli;

/// <summary>
/// Which model folders a command uses: the ones given, else the embedded default models (policy, and the small
/// draft), pretrained on first use with a progress bar when they are missing.
/// </summary>
internal static class ModelFolders
{
    /// <param name="draftOptional">True when the caller asked for no draft model (a null draft then stays null).</param>
    /// <param name="set">A named model set (<c>--set</c>) in place of <paramref name="model"/>: null or "default" is the
    /// default set (pretrained on first use); "medium" must have been made by <c>rlhfspec pretrain --set medium</c>
    /// (about 10 minutes; not made implicitly). <paramref name="draft"/> still overrides the set's draft.</param>
    public static (string Policy, string? Draft) Resolve(string? model, string? draft, bool draftOptional = false, string? set = null)
    {
        if (draft is not null && !Directory.Exists(draft)) throw new DirectoryNotFoundException($"--draft '{draft}': no such folder");
        if (set is not null && set != "default")
        {
            if (model is not null) throw new ArgumentException($"--set {set} and --model: give one of them");
            string setFolder = DefaultModels.SetFolder(DefaultModels.Folder, set);
            if (!DefaultModels.Exists(setFolder))
                throw new ArgumentException($"--set {set}: no complete set in {setFolder}; make it with ./rlhfspec pretrain --set {set}");
            return (DefaultModels.PolicyFolder(setFolder), draft ?? (draftOptional ? null : DefaultModels.DraftFolder(setFolder, Pretrainer.DraftSmallName)));
        }
        if (model is not null)
        {
            if (!Directory.Exists(model)) throw new DirectoryNotFoundException($"--model '{model}': no such folder");
            return (model, draft);
        }
        string folder = DefaultModels.Folder;
        if (!DefaultModels.Exists(folder))
        {
            AnsiConsole.MarkupLine($"default models are missing: pretraining them into [bold]{Markup.Escape(folder)}[/] (a few minutes, once)");
            PretrainCommand.TrainWithProgress(folder, new PretrainOptions());
        }
        return (DefaultModels.PolicyFolder(folder), draft ?? (draftOptional ? null : DefaultModels.DraftFolder(folder, Pretrainer.DraftSmallName)));
    }
}
