using System.CommandLine;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec bench agreement</c>: how well each draft agrees with the policy on the policy's own task rollouts.
/// The policy generates default-task prompts × samples (strategy off, temperature T); then, for each draft, the mean
/// over every response position of Σ_x min(p(x), q(x)) — the expected acceptance of one drafted token in speculative
/// sampling at T — and how often the argmaxes agree (what greedy verification accepts), teacher-forced on those
/// rollouts (<see cref="DraftAgreement"/>).
/// </summary>
internal static class AgreementBench
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var set = CommonOptions.Set();
        var drafts = new Option<string[]>("--drafts")
        {
            Description = "Draft model folders to measure; default: every draft the set holds (draft-small, draft-tiny, and draft-skip in the medium set)", AllowMultipleArgumentsPerToken = true,
        };
        var prompts = new Option<int>("--num-prompts") { Description = "Prompts of the default task", DefaultValueFactory = _ => 32 };
        var samples = new Option<int>("--samples-per-prompt") { Description = "Rollouts per prompt", DefaultValueFactory = _ => 4 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens per rollout", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "Temperature of the rollouts and of p and q (0: argmax agreement)", DefaultValueFactory = _ => 1f };
        var seed = new Option<ulong>("--seed") { Description = "Seed of prompts and sampling", DefaultValueFactory = _ => 0UL };
        var device = CommonOptions.Device();
        var ep = CommonOptions.Ep();
        var threads = CommonOptions.Threads();
        var markdown = CommonOptions.Markdown();
        var command = new Command("agreement", "Draft/policy agreement Σ min(p, q) (expected acceptance per drafted token) on the policy's task rollouts, per draft")
        {
            model, set, drafts, prompts, samples, maxNew, temperature, seed, device, ep, threads, markdown,
        };
        command.SetAction(r => Run(r.GetValue(model), r.GetValue(set), r.GetValue(drafts) ?? [], r.GetValue(prompts), r.GetValue(samples), r.GetValue(maxNew),
            r.GetValue(temperature), r.GetValue(seed), r.GetValue(device)!, r.GetValue(ep)!, r.GetValue(threads), r.GetValue(markdown)));
        return command;
    }

    private static int Run(string? modelFolder, string? set, string[] draftFolders, int numPrompts, int samplesPerPrompt, int maxNew, float temperature, ulong seed,
        string deviceName, string ep, int threads, string? markdown)
    {
        OptionChecks.Positive(("--num-prompts", numPrompts), ("--samples-per-prompt", samplesPerPrompt), ("--max-new-tokens", maxNew));
        OptionChecks.Temperature(temperature);
        OptionChecks.Threads(threads);
        foreach (var d in draftFolders)
            if (!Directory.Exists(d)) throw new DirectoryNotFoundException($"--drafts '{d}': no such folder");
        ExecutionProviders.Check(ep);
        OutputPaths.Check(("--markdown", markdown));
        var (policyFolder, _) = ModelFolders.Resolve(modelFolder, null, draftOptional: true, set: set);
        if (modelFolder is not null && draftFolders.Length == 0)
            throw new ArgumentException("--drafts: give the draft folders to measure (with --model there is no set to take them from)");
        if (draftFolders.Length == 0)
        {
            string setFolder = DefaultModels.SetFolder(DefaultModels.Folder, set);
            draftFolders = DefaultModels.DraftsIn(setFolder).Select(n => DefaultModels.DraftFolder(setFolder, n)).ToArray();
        }

        var session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(ep), IntraOpThreads = threads };
        var runtime = new TransformerOptions { KvMemoryBudgetBytes = 512L << 20, Session = session };
        using var checkpoint = Checkpoint.Load(policyFolder);
        var draftCheckpoints = new List<Checkpoint>();
        try
        {
            foreach (var d in draftFolders)
            {
                var c = Checkpoint.Load(d);
                draftCheckpoints.Add(c);
                Checkpoint.CheckCompatibleDraft(checkpoint, c);
            }
            using var policyWeights = TransformerWeights.FromCheckpoint(checkpoint);
            using var backend = Devices.Open(deviceName);
            using var policy = new TransformerModel(policyWeights, backend, runtime);
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
            AnsiConsole.MarkupLine($"policy {Markup.Escape(policyFolder)} ({policyWeights.ParameterCount:N0} parameters); device {Markup.Escape(backend.Info.Id)}");

            var (sequences, summary) = Rollouts(policy, checkpoint, numPrompts, samplesPerPrompt, maxNew, temperature, seed);
            AnsiConsole.MarkupLine(Markup.Escape(summary));

            var table = new Table().Border(TableBorder.Rounded).AddColumns("draft", "parameters", "draft / policy", "positions", "Σ min(p, q)", "argmax agreement");
            var md = new StringBuilder(summary).Append("\n\n| draft | parameters | draft / policy | positions | Σ min(p, q) | argmax agreement |\n|---|---:|---:|---:|---:|---:|\n");
            for (int i = 0; i < draftFolders.Length; i++)
            {
                using var draftWeights = TransformerWeights.FromCheckpoint(draftCheckpoints[i]);
                using var draft = new TransformerModel(draftWeights, backend, runtime);
                var result = DraftAgreement.Measure(policy, draft, sequences, temperature, maxTokensPerForward: 2048);
                string[] cells = [draftFolders[i], draftWeights.ParameterCount.ToString("N0", CultureInfo.InvariantCulture),
                    ((double)draftWeights.ParameterCount / policyWeights.ParameterCount).ToString("P2", CultureInfo.InvariantCulture),
                    result.Positions.ToString(CultureInfo.InvariantCulture), result.MeanOverlap.ToString("F3", CultureInfo.InvariantCulture),
                    result.ArgmaxAgreement.ToString("F3", CultureInfo.InvariantCulture)];
                table.AddRow(cells.Select(Markup.Escape).ToArray());
                md.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
            }
            AnsiConsole.Write(table);
            const string note = "Σ min(p, q): mean over response positions of the expected acceptance of one drafted token in speculative sampling at this temperature";
            AnsiConsole.MarkupLine(Markup.Escape(note));
            if (markdown is not null) AtomicFile.WriteText(markdown, md.Append('\n').Append(note).Append('\n').ToString());
            return 0;
        }
        finally
        {
            foreach (var c in draftCheckpoints) c.Dispose();
        }
    }

    /// <summary>
    /// The policy's rollouts of <paramref name="numPrompts"/> default-task prompts × <paramref name="samplesPerPrompt"/>
    /// (strategy off, temperature <paramref name="temperature"/>, with a progress bar) as agreement sequences, and a
    /// line saying what they are (tokens, mean reward).
    /// </summary>
    internal static (DraftAgreement.Sequence[] Sequences, string Summary) Rollouts(TransformerModel policy, Checkpoint checkpoint, int numPrompts, int samplesPerPrompt,
        int maxNew, float temperature, ulong seed)
    {
        var texts = GenerateCommand.TaskPrompts(numPrompts, seed);
        var promptIds = texts.Select(p => checkpoint.Tokenizer.Encode(p)).ToArray();
        var requests = GenerationRequests.For(promptIds, samplesPerPrompt, maxNew, temperature, 1f, seed);
        var generator = new Generator(policy, null, new GeneratorSettings { Strategy = StrategyMode.Parse("off"), StopTokens = checkpoint.StopTokenIds(), MaxBatch = 256 });
        GeneratorRunResult rollouts = null!;
        AnsiConsole.Progress().AutoClear(true).Start(ctx =>
        {
            var bar = ctx.AddTask("rollouts", maxValue: requests.Length);
            rollouts = generator.Run(requests, i => bar.Value = i.Finished.Count);
        });
        double reward = rollouts.Results.Average(r => ArithmeticTask.Reward(texts[r.Request.PromptIndex], checkpoint.Tokenizer.Decode(r.Tokens, skipSpecialTokens: true)));
        var sequences = rollouts.Results.Select(r => new DraftAgreement.Sequence(r.Request.Prompt, r.Tokens)).ToArray();
        string summary = string.Create(CultureInfo.InvariantCulture,
            $"rollouts: {numPrompts} default-task prompts × {samplesPerPrompt} at T = {temperature} (strategy off, seed {seed}), {sequences.Sum(s => s.Response.Length)} response tokens, mean reward {reward:F3}");
        return (sequences, summary);
    }
}
