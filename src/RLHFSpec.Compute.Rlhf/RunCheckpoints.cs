using System.Text;
using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// A run's checkpoints and what a resume reads back. Each checkpoint (checkpoints/iter-NNNNNN: policy, draft and the
/// algorithm's critic in HF layout, optimizer states, <c>state.json</c>) is written into a temporary folder, renamed
/// into place, and only then named in <c>latest</c>: a run killed at any moment leaves the previous checkpoint whole.
/// A checkpoint carries the hash of the run's config.json, so a resume can tell that the two belong together.
/// </summary>
internal sealed class RunCheckpoints(string runFolder, string configSha256, RunWeights weights, RunModels models, IRlhfAlgorithm algorithm)
{
    private const string PolicyFolder = "policy", DraftFolder = "draft", StateFile = "state.json";
    private const string PolicyOptimizerFile = "policy_optimizer.bin", DraftOptimizerFile = "draft_optimizer.bin";

    /// <summary>The hash a new run's checkpoints carry: of the config.json it writes.</summary>
    public static string ConfigHash(RlhfConfig config) => Sha256(config.ToJson());

    /// <summary>The policy checkpoint a run continues from (the configured one for a new run).</summary>
    public static string PolicySource(ResumePoint? resume, string policyFolder) => resume is null ? policyFolder : Path.Combine(resume.Latest, PolicyFolder);

    /// <summary>The draft checkpoint a run continues from (null when a resumed run's checkpoint has none).</summary>
    public static string? DraftSource(ResumePoint? resume, string? draftFolder)
    {
        if (resume is null) return draftFolder;
        string draft = Path.Combine(resume.Latest, DraftFolder);
        return Directory.Exists(draft) ? draft : null;
    }

    /// <summary>
    /// Where a resume starts: the latest checkpoint and its state, checked against the run's config.json (the
    /// checkpoint carries that file's hash) and against the iterations still to run.
    /// </summary>
    public static ResumePoint Find(RunFolder run, RlhfConfig config)
    {
        string named = $"{run.Label} '{run.FullPath}'";
        string latest = Latest(run.FullPath) ?? throw NoCheckpoint(run, named);
        string stateFile = Path.Combine(latest, StateFile);
        CheckpointState state;
        try
        {
            state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(stateFile)) ?? throw new InvalidDataException($"{stateFile}: empty");
        }
        catch (JsonException e) { throw new InvalidDataException($"{stateFile}: not a checkpoint state ({e.Message})"); }
        string configFile = Path.Combine(run.FullPath, RlhfTrainer.ConfigFile);
        if (!File.Exists(configFile)) throw new FileNotFoundException($"{named}: its {RlhfTrainer.ConfigFile} is missing", configFile);
        string sha = Sha256(File.ReadAllText(configFile));
        if (state.ConfigSha256 is { } saved && saved != sha)
            throw new InvalidDataException($"{named}: {RlhfTrainer.ConfigFile} does not belong to checkpoint {Path.GetFileName(latest)} (it was written by another run's " +
                "start); the folder mixes two runs and cannot be resumed");
        if (state.Iteration >= config.Iterations)
            throw new ArgumentException($"{named}: the run is already finished (its latest checkpoint is iteration {state.Iteration}, iterations is {config.Iterations}); " +
                $"to train further, resume with --iterations N, N > {state.Iteration}");
        return new ResumePoint(latest, state, sha);
    }

    /// <summary>Why a run folder without a <c>latest</c> checkpoint cannot be resumed (and how to name one when checkpoints exist).</summary>
    private static Exception NoCheckpoint(RunFolder run, string named)
    {
        string checkpoints = Path.Combine(run.FullPath, RlhfTrainer.CheckpointsFolder);
        var present = Directory.Exists(checkpoints)
            ? Directory.GetDirectories(checkpoints).Select(Path.GetFileName).OfType<string>().Where(n => n.StartsWith("iter-", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList()
            : [];
        if (present.Count > 0)
            return new InvalidDataException($"{named}: its '{RlhfTrainer.LatestFile}' file is missing, though checkpoints exist ({string.Join(", ", present)}); " +
                $"name the one to resume from in it (e.g. echo {present[^1]} > {Path.Combine(run.FullPath, RlhfTrainer.LatestFile)})");
        return new DirectoryNotFoundException($"{named}: no checkpoint in {checkpoints}");
    }

    /// <summary>The latest complete checkpoint folder of a run, or null.</summary>
    public static string? Latest(string runFolder)
    {
        string latest = Path.Combine(runFolder, RlhfTrainer.LatestFile);
        if (!File.Exists(latest)) return null;
        string folder = Path.Combine(runFolder, RlhfTrainer.CheckpointsFolder, File.ReadAllText(latest).Trim());
        return Directory.Exists(folder) ? folder : throw new InvalidDataException($"{latest}: names checkpoint '{folder}', which does not exist");
    }

    /// <summary>A new run's first writes: the reference (the starting policy), config.json and an empty metrics file.</summary>
    public void WriteStart(RlhfConfig config)
    {
        SaveModel(Path.Combine(runFolder, RlhfTrainer.ReferenceFolder), models.Reference, weights.PolicyConfig);
        AtomicFile.WriteText(Path.Combine(runFolder, RlhfTrainer.ConfigFile), config.ToJson());
        AtomicFile.WriteText(Path.Combine(runFolder, RlhfTrainer.MetricsFile), "");
    }

    /// <summary>Writes checkpoints/iter-NNNNNN atomically, then points <c>latest</c> at it.</summary>
    public void Save(int iteration)
    {
        string name = $"iter-{iteration:D6}";
        AtomicFile.WriteFolder(Path.Combine(runFolder, RlhfTrainer.CheckpointsFolder, name), temp =>
        {
            SaveModel(Path.Combine(temp, PolicyFolder), weights.Policy, weights.PolicyConfig);
            if (weights.Draft is not null) SaveModel(Path.Combine(temp, DraftFolder), weights.Draft, weights.DraftConfig!);
            models.Optimizer.Save(Path.Combine(temp, PolicyOptimizerFile));
            algorithm.SaveCheckpoint(temp, weights.Tokenizer);
            models.Distiller?.Optimizer.Save(Path.Combine(temp, DraftOptimizerFile));
            AtomicFile.WriteText(Path.Combine(temp, StateFile), JsonSerializer.Serialize(new CheckpointState(iteration, configSha256)));
        });
        AtomicFile.WriteText(Path.Combine(runFolder, RlhfTrainer.LatestFile), name + "\n");
    }

    /// <summary>A resume's optimizer states: the policy's, the algorithm's (critic) and the draft's when the checkpoint has one.</summary>
    public void LoadOptimizers(ResumePoint resume)
    {
        models.Optimizer.Load(Path.Combine(resume.Latest, PolicyOptimizerFile));
        algorithm.LoadOptimizer(resume.Latest);
        string draftOptimizer = Path.Combine(resume.Latest, DraftOptimizerFile);
        if (models.Distiller is not null && File.Exists(draftOptimizer)) models.Distiller.Optimizer.Load(draftOptimizer);
    }

    /// <summary>
    /// A resume's metrics so far: the evaluation before training (line 0, or null) and the lines of the iterations up to
    /// the checkpoint's (later lines, written after it, are dropped: those iterations run again).
    /// </summary>
    public static (EvaluationMetrics? Baseline, List<IterationMetrics> History) ReadMetrics(string runFolder, ResumePoint resume)
    {
        EvaluationMetrics? baseline = null;
        var history = new List<IterationMetrics>();
        string file = Path.Combine(runFolder, RlhfTrainer.MetricsFile);
        if (!File.Exists(file)) return (baseline, history);
        foreach (var line in File.ReadAllLines(file).Where(l => l.Length > 0))
        {
            // Line 0 is the evaluation before training; the others are iterations.
            int at;
            using (var doc = JsonDocument.Parse(line)) at = doc.RootElement.GetProperty("iteration").GetInt32();
            if (at == 0) baseline = JsonSerializer.Deserialize<EvaluationMetrics>(line);
            else if (at <= resume.State.Iteration) history.Add(JsonSerializer.Deserialize<IterationMetrics>(line)!);
        }
        return (baseline, history);
    }

    private void SaveModel(string folder, TransformerWeights model, ModelConfig config) =>
        Checkpoint.Save(folder, config, model.ToHostTensors(), weights.Tokenizer, TensorDType.F32);

    private static string Sha256(string text) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
