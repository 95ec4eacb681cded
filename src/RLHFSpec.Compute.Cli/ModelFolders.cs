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
    public static (string Policy, string? Draft) Resolve(string? model, string? draft, bool draftOptional = false)
    {
        if (draft is not null && !Directory.Exists(draft)) throw new DirectoryNotFoundException($"--draft '{draft}': no such folder");
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
