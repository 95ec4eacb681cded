using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Pretraining;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Tests.Model;

namespace RLHFSpec.Compute.Tests.Pretraining;

/// <summary>
/// The pretrainer on tiny models (seconds): the loss falls clearly, the saved folders load back as checkpoints that
/// share one tokenizer, a run is reproducible from its seed, and bad options fail with a message naming them.
/// </summary>
public class PretrainerTests
{
    private static IReadOnlyList<PretrainModelSpec> TinyModels()
    {
        var tokenizer = ArithmeticTokenizer.Create();
        return new[]
        {
            new PretrainModelSpec
            {
                Name = Pretrainer.PolicyName, Steps = 48, PeakLearningRate = 3e-2, MinLearningRate = 3e-3, WarmupSteps = 3, TokensPerBatch = 256,
                Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 32, layers: 1, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 256),
            },
            new PretrainModelSpec
            {
                Name = Pretrainer.DraftSmallName, Steps = 16, PeakLearningRate = 3e-2, MinLearningRate = 3e-3, WarmupSteps = 3, TokensPerBatch = 256,
                Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 16, layers: 1, heads: 2, kvHeads: 1, intermediate: 32, maxPositions: 256),
            },
            new PretrainModelSpec
            {
                Name = Pretrainer.DraftTinyName, Steps = 16, PeakLearningRate = 3e-2, MinLearningRate = 3e-3, WarmupSteps = 3, TokensPerBatch = 256,
                Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 8, layers: 1, heads: 2, kvHeads: 2, intermediate: 16, maxPositions: 256),
            },
        };
    }

    private static PretrainOptions TinyOptions(int seed) => new()
    {
        Seed = seed, Threads = 1, MaxTrainTokens = 40, EvalPrompts = 6, MaxEvalTerms = 2, Models = TinyModels(),
    };

    [Test]
    public void TinyRunLearnsSavesCompatibleCheckpointsAndIsReproducible()
    {
        using var a = new FormatsTestFolder();
        using var b = new FormatsTestFolder();
        var first = Pretrainer.Run(a.Path, TinyOptions(5));
        var again = Pretrainer.Run(b.Path, TinyOptions(5) with { PolicyOnly = true });

        Assert.That(first.Models.Select(m => m.Name), Is.EqualTo(DefaultModels.ModelNames));
        foreach (var m in first.Models)
        {
            Assert.That(m.Steps, Is.EqualTo(m.Name == Pretrainer.PolicyName ? 48 : 16));
            Assert.That(m.TrainTokens, Is.GreaterThan(0));
            Assert.That(m.InitialLoss, Is.GreaterThan(2.0), $"{m.Name}: starts near ln(vocab)");
            TestContext.Out.WriteLine(m);
            // From ≈ ln 16 = 2.77 (uniform); the policy must get well below, the short draft runs just lower.
            Assert.That(m.FinalLoss, Is.LessThan(m.InitialLoss - (m.Name == Pretrainer.PolicyName ? 0.3 : 0.05)), $"{m.Name}: loss falls clearly");
            Assert.That(m.TokenAccuracy, Is.InRange(0.0, 1.0));
            Assert.That(m.ExactAccuracy, Is.InRange(0.0, 1.0));
            Assert.That(m.EvalPrompts, Is.EqualTo(6));
        }
        Assert.That(first.Models[0].Parameters, Is.GreaterThan(first.Models[1].Parameters));

        // Same seed (and thread count): same losses, same accuracies, same weights.
        Assert.That(again.Models.Single(), Is.EqualTo(first.Models[0] with { TrainSeconds = again.Models[0].TrainSeconds, TrainCpuSeconds = again.Models[0].TrainCpuSeconds, EvalSeconds = again.Models[0].EvalSeconds }));
        Assert.That(File.ReadAllBytes(Path.Combine(b.Path, "policy", "model.safetensors")),
            Is.EqualTo(File.ReadAllBytes(Path.Combine(a.Path, "policy", "model.safetensors"))));
        Assert.That(again.Models.Select(m => m.Name), Is.EqualTo(new[] { Pretrainer.PolicyName }));

        // The folders are Hugging Face checkpoints sharing the policy's tokenizer; the summary reads back.
        using var policy = Checkpoint.Load(DefaultModels.PolicyFolder(a.Path));
        Assert.That(policy.Config.HiddenSize, Is.EqualTo(32));
        Assert.That(policy.Tokenizer.EosId, Is.EqualTo(ArithmeticTokenizer.Create().EosId));
        Assert.That(policy.Tokenizer.PadId, Is.EqualTo(ArithmeticTokenizer.Create().PadId));
        foreach (var name in new[] { Pretrainer.DraftSmallName, Pretrainer.DraftTinyName })
        {
            using var draft = Checkpoint.Load(DefaultModels.DraftFolder(a.Path, name));
            Assert.DoesNotThrow(() => Checkpoint.CheckCompatibleDraft(policy, draft), name);
        }
        Assert.That(PretrainSummary.Load(a.Path), Is.EqualTo(first).Using<PretrainSummary>((x, y) =>
            x.Seed == y.Seed && x.TokenizerFingerprint == y.TokenizerFingerprint && x.Models.SequenceEqual(y.Models)));
        Assert.That(DefaultModels.Exists(a.Path), "a complete set");

        // Retraining one model keeps the others' entries (in model order) and the set complete.
        var refreshed = Pretrainer.Run(a.Path, TinyOptions(5) with { Only = new[] { Pretrainer.DraftTinyName } });
        Assert.That(refreshed.Models.Select(m => m.Name), Is.EqualTo(DefaultModels.ModelNames));
        Assert.That(refreshed.Models[0], Is.EqualTo(first.Models[0]));
        Assert.That(refreshed.Models[2].FinalLoss, Is.EqualTo(first.Models[2].FinalLoss), "same seed, same draft");
        Assert.That(DefaultModels.Exists(a.Path), "still a complete set");
        string summaryText = File.ReadAllText(Path.Combine(a.Path, PretrainSummary.FileName));
        Assert.That(DefaultModels.EnsureCreated(folder: a.Path), Is.EqualTo(a.Path));
        Assert.That(File.ReadAllText(Path.Combine(a.Path, PretrainSummary.FileName)), Is.EqualTo(summaryText), "a complete set is not retrained");
        Assert.That(!DefaultModels.Exists(b.Path), "policy only is not a complete set");
        // Models pretrained for another version of the task (or before versions were recorded) are not the set.
        var current = PretrainSummary.Load(a.Path);
        Assert.That(current.Task, Is.EqualTo(ArithmeticTask.Version));
        (current with { Task = "running-sum/terms-1-99/v1" }).Save(a.Path);
        Assert.That(!DefaultModels.Exists(a.Path), "models of another task version count as missing");
        File.WriteAllText(Path.Combine(a.Path, PretrainSummary.FileName), summaryText.Replace($"\"task\": \"{ArithmeticTask.Version}\"", "\"comment\": \"written before task versions\""));
        Assert.That(PretrainSummary.Load(a.Path).Task, Is.Null);
        Assert.That(!DefaultModels.Exists(a.Path), "a summary without a task version counts as missing");
        current.Save(a.Path);
        Assert.That(DefaultModels.Exists(a.Path), "the current version is the set again");
        File.WriteAllText(Path.Combine(a.Path, PretrainSummary.FileName), "{ not json");
        Assert.That(!DefaultModels.Exists(a.Path), "a damaged summary counts as missing");
    }

    [Test]
    public void TokenizerRoundTripsEveryTaskStringOneCharacterPerToken()
    {
        var tokenizer = ArithmeticTokenizer.Create();
        Assert.That(tokenizer.VocabSize, Is.EqualTo(ArithmeticTask.Alphabet.Length + 2));
        Assert.That(tokenizer.EosId, Is.EqualTo(ArithmeticTask.Alphabet.Length));
        Assert.That(tokenizer.PadId, Is.EqualTo(ArithmeticTask.Alphabet.Length + 1));
        using var folder = new FormatsTestFolder();
        tokenizer.Save(folder.Path);
        var loaded = TextTokenizer.Load(folder.Path);
        Assert.That(loaded.Fingerprint, Is.EqualTo(tokenizer.Fingerprint));
        Assert.That((loaded.EosId, loaded.PadId), Is.EqualTo((tokenizer.EosId, tokenizer.PadId)));

        var task = new ArithmeticTask(3);
        var samples = Enumerable.Range(0, 300).Select(_ => task.Next())
            .Append(ArithmeticTask.Make(new[] { 0, 0 })).Append(ArithmeticTask.Make(Enumerable.Repeat(99, ArithmeticTask.MaxTerms).ToArray()));
        foreach (var s in samples)
            foreach (var text in new[] { s.Prompt, s.ReferenceResponse, s.Prompt + s.ReferenceResponse })
                foreach (var t in new[] { tokenizer, loaded })
                {
                    var ids = t.Encode(text);
                    Assert.That(ids, Is.EqualTo(text.Select(ch => ArithmeticTask.Alphabet.IndexOf(ch)).ToArray()), text);
                    Assert.That(t.Decode(ids), Is.EqualTo(text));
                }
        var withEos = tokenizer.Encode("1+2=" + ArithmeticTokenizer.EndOfText);
        Assert.That(withEos[^1], Is.EqualTo(tokenizer.EosId));
        Assert.That(tokenizer.Decode(withEos, skipSpecialTokens: true), Is.EqualTo("1+2="));
    }

    [Test]
    public void BatchesTrainOnResponseAndEosOnlyWithRightPadding()
    {
        var tokenizer = ArithmeticTokenizer.Create();
        int eos = tokenizer.EosId!.Value, pad = tokenizer.PadId!.Value;
        var shortSample = TaskBatches.Encode(tokenizer, ArithmeticTask.Make(new[] { 1, 2 }), eos);      // "1+2=" "1+2=3#3"
        var longSample = TaskBatches.Encode(tokenizer, ArithmeticTask.Make(new[] { 10, 20 }), eos);     // "10+20=" "10+20=30#30"
        Assert.That(shortSample.PromptLength, Is.EqualTo(4));
        Assert.That(shortSample.Ids.Length, Is.EqualTo(4 + 7 + 1));
        var batch = LanguageModelBatch.RightPadded(new[] { shortSample, longSample }, pad);
        Assert.That((batch.Batch, batch.Length), Is.EqualTo((2, longSample.Ids.Length - 1)));
        int t = batch.Length;
        // Row 0: inputs are the first 11 tokens, then padding; targets are the sequence shifted by one.
        for (int c = 0; c < t; c++)
        {
            bool real = c < shortSample.Ids.Length - 1;
            Assert.That(batch.AttentionMask[c], Is.EqualTo(real ? 1 : 0));
            Assert.That(batch.Ids[c], Is.EqualTo(real ? shortSample.Ids[c] : pad));
            if (real) Assert.That(batch.Targets[c], Is.EqualTo(shortSample.Ids[c + 1]));
            // The first loss position predicts the first response token (input = the prompt's '=').
            Assert.That(batch.LossMask[c], Is.EqualTo(real && c >= 3 ? 1 : 0), $"column {c}");
        }
        Assert.That(batch.Targets[t + t - 1], Is.EqualTo(eos), "the last target of the full row is EOS");
        Assert.That(batch.LossTokens, Is.EqualTo(8 + 12));
    }

    [Test]
    public void BadOptionsFailBeforeTrainingWithAMessageNamingThem()
    {
        using var folder = new FormatsTestFolder();
        Assert.That(() => Pretrainer.Run(folder.Path, TinyOptions(1) with { Steps = 0 }), Throws.ArgumentException.With.Message.Contains("--steps must be >= 1, got 0"));
        Assert.That(() => Pretrainer.Run(folder.Path, TinyOptions(1) with { Steps = -3 }), Throws.ArgumentException.With.Message.Contains("got -3"));
        Assert.That(() => Pretrainer.Run(folder.Path, TinyOptions(1) with { Threads = -1 }), Throws.ArgumentException.With.Message.Contains("--threads"));
        string file = folder.File("a-file");
        File.WriteAllText(file, "");
        Assert.That(() => Pretrainer.Run(Path.Combine(file, "models"), TinyOptions(1)), Throws.ArgumentException.With.Message.Contains("not writable"));
        Assert.That(() => Pretrainer.Run(folder.Path, TinyOptions(1) with { Only = new[] { "policy", "nope" } }),
            Throws.ArgumentException.With.Message.Contains("--model nope: no such model"));
        var models = TinyModels();
        Assert.That(() => Pretrainer.Run(folder.Path, TinyOptions(1) with { Models = new[] { models[0], models[0] } }),
            Throws.ArgumentException.With.Message.Contains("used twice"));
        Assert.That(() => Pretrainer.Run(folder.Path, TinyOptions(1) with { Models = new[] { models[0] with { Name = "../x" } } }),
            Throws.ArgumentException.With.Message.Contains("not a folder name"));
        Assert.That(Directory.GetFileSystemEntries(folder.Path), Is.EqualTo(new[] { file }), "nothing was written");
    }

    [Test]
    public void DefaultFolderComesFromTheOverrideTheRepositoryOrTheCache()
    {
        using var folder = new FormatsTestFolder();
        Assert.That(DefaultModels.Resolve(folder.File("mine")), Is.EqualTo(Path.GetFullPath(folder.File("mine"))));
        string nested = Path.Combine(folder.Path, "repo", "src", "deep");
        Directory.CreateDirectory(nested);
        File.WriteAllText(Path.Combine(folder.Path, "repo", DefaultModels.SolutionFileName), "");
        Assert.That(DefaultModels.FindRepositoryRoot(nested), Is.EqualTo(Path.Combine(folder.Path, "repo")));
        Assert.That(DefaultModels.Resolve(null, folder.Path, nested), Is.EqualTo(Path.Combine(folder.Path, "repo", "models")));
        Assert.That(DefaultModels.Resolve("", folder.Path), Does.EndWith(Path.Combine(".cache", "rlhfspec", "models")));
        // This test runs from inside the repository: the process default is <repo>/models unless overridden.
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(DefaultModels.EnvironmentVariable)))
            Assert.That(File.Exists(Path.Combine(Path.GetDirectoryName(DefaultModels.Folder)!, DefaultModels.SolutionFileName)));
    }
}
