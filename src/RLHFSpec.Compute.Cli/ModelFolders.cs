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
    /// <summary>The draft "folder" that means no draft model (<c>--draft none</c>, train's <c>draft</c> key).</summary>
    public const string NoDraft = "none";

    /// <param name="draftOptional">True when the caller asked for no draft model (a null draft then stays null).</param>
    /// <param name="set">A named model set in place of <paramref name="model"/>: null is the default set (pretrained on
    /// first use); "default" the same, named; "medium" must have been made by <c>rlhfspec pretrain --set medium</c>
    /// (about 10 minutes; not made implicitly). A set named together with a model is refused (both name the policy).
    /// The set's draft is the one its <c>draft.json</c> chose by measurement (<see cref="DefaultModels.SetDraftName"/>), else
    /// <see cref="Pretrainer.DefaultDraftName"/> (the medium set's draft-tiny, the default set's draft-small);
    /// <paramref name="draft"/> still overrides it (e.g. the medium set's draft-small).</param>
    /// <param name="setOption">The option that named the set, for messages (<c>--set</c>; <c>--model-set</c> on <c>train</c>).</param>
    /// <param name="modelOption">The option that named the model, for messages (<c>--model</c>; <c>--policy</c> on <c>train</c>).</param>
    public static (string Policy, string? Draft) Resolve(string? model, string? draft, bool draftOptional = false, string? set = null,
        string setOption = "--set", string modelOption = "--model")
    {
        // --draft none: no draft model (as train's draft = "none"): off and the suffix proposer only.
        if (draft == NoDraft) (draft, draftOptional) = (null, true);
        if (set is not null)
        {
            if (!DefaultModels.SetNames.Contains(set))
                throw new ArgumentException($"{setOption} {set}: no such model set (sets: {string.Join(", ", DefaultModels.SetNames)})");
            if (model is not null) throw new ArgumentException($"{setOption} {set} and {modelOption}: both name the policy; give one of them");
        }
        if (draft is not null && !Directory.Exists(draft)) throw new DirectoryNotFoundException($"--draft '{draft}': no such folder");
        if (set is not null && set != DefaultModels.DefaultSetName)
        {
            string setFolder = DefaultModels.SetFolder(DefaultModels.Folder, set);
            if (!DefaultModels.Exists(setFolder))
                throw new ArgumentException($"{setOption} {set}: no complete set in {setFolder}; make it with ./rlhfspec pretrain --set {set}");
            return (DefaultModels.PolicyFolder(setFolder), draft ?? (draftOptional ? null : DefaultModels.DraftFolder(setFolder, DefaultModels.SetDraftName(setFolder, set))));
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
