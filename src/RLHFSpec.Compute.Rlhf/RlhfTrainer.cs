using RLHFSpec.Compute.Generation.Selection;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.IO;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>Progress of a run, for progress bars and per-iteration lines.</summary>
public interface IRlhfObserver
{
    void StageStarted(int iteration, string stage, int total);
    void StageAdvanced(int value);
    void IterationFinished(IterationMetrics metrics);

    /// <summary>The held-out evaluation before training (iteration 0); later ones come with their iteration's metrics.</summary>
    void EvaluationFinished(EvaluationMetrics metrics) { }
}

/// <summary>
/// The RLHF loop. Each iteration: <b>generation</b> (the policy writes <c>samples_per_prompt</c> responses to each
/// prompt through the speculative <see cref="Generator"/>: adaptive strategy selection, suffix drafts over siblings
/// and earlier rollouts, the draft model), <b>inference</b> (task, rule or reward-model rewards, old and reference log-probs, ragged
/// minibatches bucketed by length), <b>training</b> (GRPO: group-normalised advantages, clipped surrogate, k3 KL to the
/// frozen reference; or PPO: a critic initialised from the policy's trunk, per-token rewards of −β·KL with the outcome
/// reward on the last token, GAE, whitened advantages, clipped surrogate with an entropy bonus, clipped value loss;
/// gradients from the project's autodiff on ONNX Runtime; AdamW in place on the weights the generation model
/// reads), <b>draft refresh</b> (forward-KL distillation of the draft toward the updated policy on
/// the same rollouts). Each stage runs under a named timer; metrics go to a JSONL and a plot; checkpoints are
/// written atomically and a run resumes from its latest one.
/// </summary>
public sealed class RlhfTrainer : IDisposable
{
    public const string MetricsFile = "metrics.jsonl", PlotFile = "metrics.png", ConfigFile = "config.json", LatestFile = "latest", SummaryFile = "summary.json";
    public const string CheckpointsFolder = "checkpoints", ReferenceFolder = "reference", CriticFolder = "critic";

    private readonly RlhfConfig _config;
    private readonly RunFolder _run;
    private readonly string _out;
    private readonly string _configSha256; // of the run's config.json: its checkpoints carry it, so a resume can tell they belong together
    private readonly ComputeBackend _backend;
    private readonly TextTokenizer _tokenizer;
    private readonly ModelConfig _policyConfig;
    private readonly ModelConfig? _draftConfig;
    private readonly TransformerWeights _policy, _reference;
    private readonly TransformerWeights? _draft;
    private readonly TransformerModel _policyModel;
    private readonly TransformerModel? _draftModel;
    private readonly Generator _generator;
    private readonly InstanceModels? _instances; // instances > 1: the cluster's models over the shared weights
    private readonly PolicyGraphs _policyGraphs;
    private readonly PolicyGraphs? _draftGraphs;
    private readonly TensorArena _gradients;
    private readonly AdamW _optimizer;
    private readonly DraftDistiller? _distiller;
    private readonly IReadOnlyList<string>? _filePrompts;
    private readonly List<IterationMetrics> _history = new();
    private readonly HashSet<int> _stops = new();
    private readonly RewardRule _reward;
    private readonly RewardModel? _rewardModel;
    private readonly ValueModel? _critic;
    private readonly TensorArena? _criticGradients;
    private readonly AdamW? _criticOptimizer;
    private readonly HeldOutEvaluation? _evaluation;
    private EvaluationMetrics? _baseline; // the evaluation before training (iteration 0)

    /// <summary>Starts a run in <paramref name="outFolder"/> (or resumes it when <paramref name="resume"/>); a new run
    /// needs a missing or empty folder unless <paramref name="overwrite"/> (see <see cref="RunFolder"/>).</summary>
    /// <param name="policyFolder">Resolved policy folder (ignored on resume: the checkpoint's is used).</param>
    /// <param name="draftFolder">Resolved draft folder, or null for none.</param>
    public RlhfTrainer(RlhfConfig config, string outFolder, string policyFolder, string? draftFolder, bool resume = false, bool overwrite = false)
        : this(config, RunFolder.Open(outFolder, resume ? RunFolderMode.Resume : overwrite ? RunFolderMode.Overwrite : RunFolderMode.New), policyFolder, draftFolder)
    {
    }

    /// <summary>Starts (or, with <see cref="RunFolderMode.Resume"/>, resumes) a run in a held folder, which the trainer
    /// now owns: it keeps the lock until disposed, and if the start fails it removes what the run created.</summary>
    public RlhfTrainer(RlhfConfig config, RunFolder run, string policyFolder, string? draftFolder)
    {
        _run = run;
        try
        {
            bool resume = run.Mode == RunFolderMode.Resume;
            string outFolder = run.FullPath;
            config.Validate();
            if (config.Reallocate && config.Instances < 2)
                throw new ArgumentException($"reallocate: 'on' moves samples between generation instances; set instances >= 2 (it is {config.Instances})");
            _config = config;
            _reward = RewardRule.Parse(config.Reward);
            _out = run.FullPath;
            if (config.Prompts is not null) _filePrompts = PromptFile.Read(config.Prompts);
            if (_filePrompts is not null && _reward.NeedsTaskPrompts)
                foreach (var (p, i) in _filePrompts.Select((p, i) => (p, i)))
                    try { ArithmeticTask.Answer(p); }
                    catch (FormatException e) { throw new InvalidDataException($"prompts '{config.Prompts}': prompt {i}: the task reward needs default-task prompts ({e.Message}); set reward to regex:PATTERN or exact:TEXT for other prompts"); }

            string? latest = null;
            CheckpointState? resumed = null;
            if (resume)
            {
                run.RemoveStaleTemporaries();
                (latest, resumed, _configSha256) = ResumePoint(run, config);
            }
            else _configSha256 = Sha256(config.ToJson());
            string policySource = latest is null ? policyFolder : Path.Combine(latest, "policy");
            string? draftSource = latest is null ? draftFolder : (Directory.Exists(Path.Combine(latest, "draft")) ? Path.Combine(latest, "draft") : null);
            string referenceSource = resume ? Path.Combine(_out, ReferenceFolder) : policyFolder;

            var session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(config.Ep), IntraOpThreads = config.Threads };
            using (var checkpoint = Checkpoint.Load(policySource))
            {
                _tokenizer = checkpoint.Tokenizer;
                if (_filePrompts is not null)
                    for (int i = 0; i < _filePrompts.Count; i++) _tokenizer.EncodeChecked(_filePrompts[i], $"prompts '{config.Prompts}': prompt {i}");
                _policyConfig = checkpoint.Config;
                _policy = TransformerWeights.FromCheckpoint(checkpoint);
                checkpoint.CheckFinite(_policy.Arena);
                _stops.UnionWith(checkpoint.StopTokenIds());
                if (draftSource is not null)
                {
                    using var draftCheckpoint = Checkpoint.Load(draftSource);
                    Checkpoint.CheckCompatibleDraft(checkpoint, draftCheckpoint);
                    _draftConfig = draftCheckpoint.Config;
                    _draft = TransformerWeights.FromCheckpoint(draftCheckpoint);
                    draftCheckpoint.CheckFinite(_draft.Arena);
                }
                if (_reward.ModelFolder is { } rewardFolder)
                {
                    if (!Directory.Exists(rewardFolder))
                        throw new DirectoryNotFoundException($"reward '{config.Reward}': '{rewardFolder}' is not a folder (a reward model from rlhfspec train-rm)");
                    using var rewardCheckpoint = Checkpoint.Load(rewardFolder);
                    Checkpoint.CheckSameVocabulary(checkpoint, rewardCheckpoint, "reward model");
                    _rewardModel = RewardModel.Load(rewardCheckpoint, session);
                }
            }
            if (config.Algorithm == RlhfAlgorithm.Ppo)
            {
                // The critic: the run's own on resume, else the configured one, else the policy's trunk with a zero head.
                string criticSource = latest is not null ? Path.Combine(latest, CriticFolder) : config.Critic ?? policyFolder;
                if (latest is null && config.Critic is not null && !Directory.Exists(config.Critic))
                    throw new DirectoryNotFoundException($"critic: '{config.Critic}' is not a folder (a value-model or policy checkpoint in HF layout)");
                if (latest is not null && !Directory.Exists(criticSource))
                    throw new DirectoryNotFoundException($"--resume '{outFolder}': checkpoint {latest} has no critic; was the run started with algorithm ppo?");
                using var criticCheckpoint = Checkpoint.Load(criticSource);
                if (criticCheckpoint.Config.VocabSize != _policyConfig.VocabSize || criticCheckpoint.Tokenizer.Fingerprint != _tokenizer.Fingerprint)
                    throw new InvalidDataException($"critic '{criticSource}': its vocabulary differs from the policy's (vocab_size {criticCheckpoint.Config.VocabSize} vs {_policyConfig.VocabSize}, or tokenizer contents)");
                _critic = ValueModel.Load(criticCheckpoint, session);
                _criticGradients = new TensorArena(_critic.Weights.Names.Select(n => (n, _critic.Weights.Shape(n))));
                _criticOptimizer = new AdamW(new AdamWOptions { Schedule = LearningRateSchedule.Constant(config.CriticLearningRate), WeightDecay = 0, MaxGradNorm = config.MaxGradNorm });
                foreach (var name in _critic.Weights.Names) _criticOptimizer.Add(name, _critic.Weights.Memory(name), _criticGradients.Memory(name), DecoderGraphSpec.Decays(name));
            }
            _reference = TransformerWeights.Load(referenceSource);

            _backend = Devices.Open(config.Device);
            var runtime = new TransformerOptions { KvMemoryBudgetBytes = (long)config.KvMemoryMiB << 20, Session = session, Dense = config.DenseKind };
            _policyModel = new TransformerModel(_policy, _backend, runtime);
            if (_draft is not null) _draftModel = new TransformerModel(_draft, _backend, runtime);
            _generator = new Generator(_policyModel, config.Speculation.IsOff ? null : _draftModel,
                new GeneratorSettings { Strategy = config.Speculation, StopTokens = _stops, MaxBatch = config.MaxBatch, CostProfilePath = config.CostProfile });
            if (config.Instances > 1)
            {
                // Instances share the cores: without a thread count each gets its share.
                var instanceSession = session with { IntraOpThreads = config.Threads > 0 ? config.Threads : Math.Max(1, Environment.ProcessorCount / config.Instances) };
                _instances = new InstanceModels(config.Device, _policy, config.Speculation.IsOff ? null : _draft, runtime with { Session = instanceSession });
            }
            _policyGraphs = new PolicyGraphs(_policy.Spec, session);
            _gradients = new TensorArena(_policy.Spec.Tensors());
            _optimizer = new AdamW(new AdamWOptions { Schedule = LearningRateSchedule.Constant(config.LearningRate), WeightDecay = 0, MaxGradNorm = config.MaxGradNorm });
            foreach (var name in _policy.Arena.Names) _optimizer.Add(name, _policy.Arena.Memory(name), _gradients.Memory(name), DecoderGraphSpec.Decays(name));
            if (_draft is not null && config.DraftRefresh)
            {
                _draftGraphs = new PolicyGraphs(_draft.Spec, session);
                _distiller = new DraftDistiller(_draft.Spec, _draft.Arena, DistillationSession(session, config.Threads),
                    new AdamWOptions { Schedule = LearningRateSchedule.Constant(config.DraftLearningRate), WeightDecay = 0, MaxGradNorm = 1.0 });
            }

            _evaluation = HeldOutEvaluation.Resolve(config, _out, resume, _filePrompts is null, _tokenizer, _policyModel.MaxContext);
            if (_evaluation is not null && _reward.NeedsTaskPrompts && !_evaluation.AreTaskPrompts)
                throw new InvalidDataException($"{_evaluation.Source}: the task reward needs default-task prompts; set reward to regex:PATTERN or exact:TEXT for other prompts");

            if (latest is not null && resumed is { } state)
            {
                _optimizer.Load(Path.Combine(latest, "policy_optimizer.bin"));
                _criticOptimizer?.Load(Path.Combine(latest, "critic_optimizer.bin"));
                if (_distiller is not null && File.Exists(Path.Combine(latest, "draft_optimizer.bin"))) _distiller.Optimizer.Load(Path.Combine(latest, "draft_optimizer.bin"));
                NextIteration = state.Iteration + 1;
                if (File.Exists(Path.Combine(_out, MetricsFile)))
                    foreach (var line in File.ReadAllLines(Path.Combine(_out, MetricsFile)).Where(l => l.Length > 0))
                    {
                        // Line 0 is the evaluation before training; the others are iterations.
                        int at;
                        using (var doc = JsonDocument.Parse(line)) at = doc.RootElement.GetProperty("iteration").GetInt32();
                        if (at == 0) _baseline = JsonSerializer.Deserialize<EvaluationMetrics>(line);
                        else if (at <= state.Iteration) _history.Add(JsonSerializer.Deserialize<IterationMetrics>(line)!);
                    }
                // A run started before its evaluation set was saved: keep the set it scores from now on.
                if (_evaluation is not null && !File.Exists(Path.Combine(_out, HeldOutEvaluation.PromptsFile)))
                    _evaluation.Save(Path.Combine(_out, HeldOutEvaluation.PromptsFile));
            }
            else
            {
                // The run's first writes, after everything loaded: a start that fails leaves an old run (--overwrite) whole.
                NextIteration = 1;
                run.PrepareForWriting();
                SaveModel(Path.Combine(_out, ReferenceFolder), _reference, _policyConfig);
                AtomicFile.WriteText(Path.Combine(_out, ConfigFile), config.ToJson());
                AtomicFile.WriteText(Path.Combine(_out, MetricsFile), "");
                _evaluation?.Save(Path.Combine(_out, HeldOutEvaluation.PromptsFile));
            }
        }
        catch
        {
            DisposeParts();
            run.Abandon();
            throw;
        }
    }

    /// <summary>
    /// Where a resume starts: the latest checkpoint and its state, checked against the run's config.json (the
    /// checkpoint carries that file's hash) and against the iterations still to run.
    /// </summary>
    private static (string Latest, CheckpointState State, string ConfigSha256) ResumePoint(RunFolder run, RlhfConfig config)
    {
        string named = $"{run.Label} '{run.FullPath}'";
        string? latest = LatestCheckpoint(run.FullPath);
        if (latest is null)
        {
            string checkpoints = Path.Combine(run.FullPath, CheckpointsFolder);
            var present = Directory.Exists(checkpoints)
                ? Directory.GetDirectories(checkpoints).Select(Path.GetFileName).OfType<string>().Where(n => n.StartsWith("iter-", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList()
                : [];
            if (present.Count > 0)
                throw new InvalidDataException($"{named}: its '{LatestFile}' file is missing, though checkpoints exist ({string.Join(", ", present)}); " +
                    $"name the one to resume from in it (e.g. echo {present[^1]} > {Path.Combine(run.FullPath, LatestFile)})");
            throw new DirectoryNotFoundException($"{named}: no checkpoint in {checkpoints}");
        }
        string stateFile = Path.Combine(latest, "state.json");
        CheckpointState state;
        try
        {
            state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(stateFile)) ?? throw new InvalidDataException($"{stateFile}: empty");
        }
        catch (JsonException e) { throw new InvalidDataException($"{stateFile}: not a checkpoint state ({e.Message})"); }
        string configFile = Path.Combine(run.FullPath, ConfigFile);
        if (!File.Exists(configFile)) throw new FileNotFoundException($"{named}: its {ConfigFile} is missing", configFile);
        string sha = Sha256(File.ReadAllText(configFile));
        if (state.ConfigSha256 is { } saved && saved != sha)
            throw new InvalidDataException($"{named}: {ConfigFile} does not belong to checkpoint {Path.GetFileName(latest)} (it was written by another run's " +
                "start); the folder mixes two runs and cannot be resumed");
        if (state.Iteration >= config.Iterations)
            throw new ArgumentException($"{named}: the run is already finished (its latest checkpoint is iteration {state.Iteration}, iterations is {config.Iterations}); " +
                $"to train further, resume with --iterations N, N > {state.Iteration}");
        return (latest, state, sha);
    }

    private static string Sha256(string text) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    public int NextIteration { get; private set; }
    public IReadOnlyList<IterationMetrics> History => _history;

    /// <summary>The held-out evaluation set, or null when the run has none.</summary>
    public HeldOutEvaluation? Evaluation => _evaluation;

    /// <summary>The evaluation before training (iteration 0), or null.</summary>
    public EvaluationMetrics? Baseline => _baseline;

    /// <summary>Every evaluation so far in iteration order: the one before training, then those after iterations.</summary>
    public IReadOnlyList<EvaluationMetrics> Evaluations =>
        (_baseline is null ? [] : new[] { _baseline }).Concat(_history.Select(m => m.Evaluation).OfType<EvaluationMetrics>()).ToList();

    /// <summary>The last evaluation's responses, in prompt order.</summary>
    public IReadOnlyList<SampleResult> LastEvaluation { get; private set; } = [];
    public TransformerWeights Policy => _policy;

    /// <summary>PPO's critic (null for GRPO).</summary>
    public ValueModel? Critic => _critic;

    /// <summary>The responses of the last iteration's generation stage, in request order.</summary>
    public IReadOnlyList<SampleResult> LastRollouts { get; private set; } = [];
    public TransformerWeights? Draft => _draft;

    /// <summary>Runs iterations up to <see cref="RlhfConfig.Iterations"/>; returns the metrics of those it ran.</summary>
    public IReadOnlyList<IterationMetrics> Run(IRlhfObserver? observer = null, int? stopAfter = null)
    {
        var ran = new List<IterationMetrics>();
        if (_evaluation is not null && _config.EvalBeforeTrain && NextIteration == 1 && _baseline is null)
        {
            _baseline = Evaluate(0, observer);
            WriteMetrics();
            observer?.EvaluationFinished(_baseline);
        }
        for (; NextIteration <= _config.Iterations; NextIteration++)
        {
            if (stopAfter is { } k && ran.Count >= k) break;
            var m = Iteration(NextIteration, observer);
            // verl's test_freq: after every eval_every-th iteration and after the last one.
            if (_evaluation is not null && _config.EvalEvery > 0 && (NextIteration % _config.EvalEvery == 0 || NextIteration == _config.Iterations))
                m = m.WithEvaluation(Evaluate(NextIteration, observer));
            _history.Add(m);
            ran.Add(m);
            WriteMetrics();
            if (NextIteration % _config.CheckpointEvery == 0 || NextIteration == _config.Iterations) SaveCheckpoint(NextIteration);
            observer?.IterationFinished(m);
        }
        Summary = BuildSummary();
        AtomicFile.WriteText(Path.Combine(_out, SummaryFile), Summary.ToJson());
        return ran;
    }

    /// <summary>The summary written at the end of the last <see cref="Run"/> (null before one ends).</summary>
    public RunSummary? Summary { get; private set; }

    private RunSummary BuildSummary()
    {
        var policies = new Dictionary<int, string> { [0] = Path.Combine(_out, ReferenceFolder) };
        string checkpoints = Path.Combine(_out, CheckpointsFolder);
        if (Directory.Exists(checkpoints))
            foreach (var folder in Directory.GetDirectories(checkpoints))
                if (Path.GetFileName(folder) is { } name && name.StartsWith("iter-", StringComparison.Ordinal) && int.TryParse(name.AsSpan(5), out int at)
                    && Directory.Exists(Path.Combine(folder, "policy")))
                    policies[at] = Path.Combine(folder, "policy");
        return RunSummary.From(_out, _config, _history, Evaluations, _evaluation?.Prompts.Count ?? 0, policies, LatestCheckpoint(_out));
    }

    /// <summary>metrics.jsonl (the evaluation before training as line 0, then one line per iteration) and the plot, each written atomically.</summary>
    private void WriteMetrics()
    {
        var lines = new StringBuilder();
        if (_baseline is not null) lines.Append(JsonSerializer.Serialize(_baseline)).Append('\n');
        foreach (var h in _history) lines.Append(JsonSerializer.Serialize(h)).Append('\n');
        AtomicFile.WriteText(Path.Combine(_out, MetricsFile), lines.ToString());
        MetricsPlot.Write(Path.Combine(_out, PlotFile), _history, Evaluations);
    }

    /// <summary>Scores the held-out set with the current policy; nothing of the training state or the rollouts' random streams is touched.</summary>
    private EvaluationMetrics Evaluate(int iteration, IRlhfObserver? observer)
    {
        var evaluation = _evaluation!;
        observer?.StageStarted(iteration, "evaluation", evaluation.Prompts.Count);
        var clock = Stopwatch.StartNew();
        var (results, _, _) = evaluation.Generate(_generator, _config);
        var (rewards, accuracy) = Score(evaluation.Prompts, results, evaluation.AreTaskPrompts);
        observer?.StageAdvanced(results.Count);
        LastEvaluation = results;
        return new EvaluationMetrics
        {
            Iteration = iteration,
            RewardMean = rewards.Average(),
            Accuracy = accuracy,
            ResponseLengthMean = results.Average(r => (double)r.Tokens.Length),
            Truncated = results.Count(r => r.FinishReason != FinishReason.Stop) / (double)results.Count,
            Seconds = new() { ["evaluation"] = clock.Elapsed.TotalSeconds },
        };
    }

    /// <summary>
    /// Rewards of responses to <paramref name="prompts"/> (indexed by each request's prompt index) and the share
    /// answered with full reward; with a reward model on default-task prompts, that share is the task's exact verifier's
    /// (a reward model's scores are not 0/1).
    /// </summary>
    private (double[] Rewards, double Accuracy) Score(IReadOnlyList<string> prompts, IReadOnlyList<SampleResult> results, bool taskPrompts)
    {
        var texts = results.Select(r => _tokenizer.Decode(r.Tokens, skipSpecialTokens: true)).ToArray();
        var rewards = _rewardModel is { } rm
            ? rm.Score(results.Select((r, i) => rm.Sequence(r.Request.Prompt, texts[i])).ToArray(), _config.MinibatchSize).Select(x => (double)x).ToArray()
            : results.Select((r, i) => _reward.Score(prompts[r.Request.PromptIndex], texts[i])).ToArray();
        double accuracy = _rewardModel is not null && taskPrompts
            ? results.Select((r, i) => ArithmeticTask.Reward(prompts[r.Request.PromptIndex], texts[i])).Count(x => x >= 1) / (double)results.Count
            : rewards.Count(r => r >= 1) / (double)rewards.Length;
        return (rewards, accuracy);
    }

    /// <summary>Prompts of an iteration: the default task seeded by (seed, iteration), or the file's, cycled.</summary>
    public string[] PromptsOf(int iteration)
    {
        int n = _config.PromptsPerIteration;
        if (_filePrompts is { } file) return Enumerable.Range(0, n).Select(k => file[(int)(((long)(iteration - 1) * n + k) % file.Count)]).ToArray();
        var task = new ArithmeticTask(unchecked(_config.Seed * 1_000_003 + iteration));
        return Enumerable.Range(0, n).Select(_ => task.Next().Prompt).ToArray();
    }

    private IterationMetrics Iteration(int iteration, IRlhfObserver? observer)
    {
        var seconds = new Dictionary<string, double>();
        var clock = Stopwatch.StartNew();

        // ---- 1. generation ----
        var prompts = PromptsOf(iteration);
        var promptIds = prompts.Select(p => _tokenizer.Encode(p)).ToArray();
        var requests = GenerationRequests.For(promptIds, _config.SamplesPerPrompt, _config.MaxNewTokens, (float)_config.Temperature, (float)_config.TopP,
            seed: (ulong)(uint)_config.Seed * 1_000_003UL + (ulong)iteration, firstId: (long)iteration * 10_000_000L);
        observer?.StageStarted(iteration, "generation", requests.Length);
        var outcome = _instances is null
            ? _generator.Run(requests, i => observer?.StageAdvanced(i.Finished.Count))
            : _generator.RunCluster(requests, _config.Instances, _instances.Get, new ClusterOptions { Reallocate = _config.Reallocate });
        observer?.StageAdvanced(outcome.Results.Count);
        seconds["generation"] = clock.Elapsed.TotalSeconds;

        // ---- 2. inference: rewards, old and reference log-probs (PPO: critic values, GAE) ----
        clock.Restart();
        var results = outcome.Results;
        LastRollouts = results;
        observer?.StageStarted(iteration, "inference", results.Count);
        // A reward model scores the rollouts in minibatches bucketed by length; a rule scores each decoded response.
        var (rewards, accuracy) = Score(prompts, results, taskPrompts: _filePrompts is null);
        bool ppo = _critic is not null;
        var advantages = ppo ? null : Advantages.GroupNormalized(rewards, results.Select(r => r.Request.PromptIndex).ToArray());
        var order = Enumerable.Range(0, results.Count).OrderBy(i => results[i].Request.Prompt.Length + results[i].Tokens.Length).ThenBy(i => i).ToArray();
        var minibatches = order.Chunk(_config.MinibatchSize).Select(rows => new Minibatch(rows,
            SequenceBatch.From(rows.Select(i => (results[i].Request.Prompt, results[i].Tokens)).ToArray(), _tokenizer.PadId ?? 0))).ToList();
        double klSum = 0;
        long tokens = 0;
        int done = 0;
        foreach (var mb in minibatches)
        {
            mb.Old = _policyGraphs.LogProbs(_policy.Arena, mb.Batch);
            // Reference log-probs always: the KL metric needs them even when the loss has no KL term.
            mb.Reference = _policyGraphs.LogProbs(_reference.Arena, mb.Batch);
            if (ppo)
            {
                mb.Values = _critic!.Values(mb.Batch);
                // A response cut at max_new_tokens (or the context) bootstraps from the critic's value after its last token.
                var cut = Enumerable.Range(0, mb.Rows.Length).Where(k => results[mb.Rows[k]].FinishReason != FinishReason.Stop).ToArray();
                mb.ValueAtCut = new double[mb.Rows.Length];
                var atCut = _critic.ValuesAfter(cut.Select(k => (results[mb.Rows[k]].Request.Prompt, results[mb.Rows[k]].Tokens)).ToArray(), _tokenizer.PadId ?? 0);
                for (int j = 0; j < cut.Length; j++) mb.ValueAtCut[cut[j]] = atCut[j];
            }
            else mb.Advantages = mb.Batch.Scatter(mb.Rows.Select(i => Enumerable.Repeat((float)advantages![i], results[i].Tokens.Length).ToArray()).ToArray());
            for (int t = 0; t < mb.Old.Length; t++)
                if (mb.Batch.LossMask[t] != 0) { klSum += mb.Old[t] - mb.Reference![t]; tokens++; }
            observer?.StageAdvanced(done += mb.Rows.Length);
        }
        var critic = ppo ? PpoTargets(minibatches, rewards, results) : default;
        seconds["inference"] = clock.Elapsed.TotalSeconds;

        // ---- 3. training: GRPO, or PPO (policy and critic) ----
        clock.Restart();
        observer?.StageStarted(iteration, "training", _config.Epochs * minibatches.Count);
        // PPO: the KL is in the per-token rewards, so the loss has no KL term; per-token mean as in PPO.
        var settings = ppo
            ? new PolicyLossSettings(0, _config.Clip, _config.Clip, LossAggregation.TokenMean, _config.EntropyCoef)
            : new PolicyLossSettings(_config.KlBeta, _config.Clip, _config.Clip, LossAggregation.SequenceMean);
        double lossSum = 0, normSum = 0, valueLossSum = 0;
        int steps = 0;
        var shuffle = new Random(unchecked(_config.Seed * 31 + iteration));
        for (int epoch = 0; epoch < _config.Epochs; epoch++)
            foreach (var mb in minibatches.OrderBy(_ => shuffle.Next()).ToList())
            {
                var (loss, _) = _policyGraphs.PolicyLossGradients(_policy.Arena, _gradients, mb.Batch, mb.Old!, mb.Advantages!, mb.Reference, settings);
                double norm = _optimizer.Update();
                if (!double.IsFinite(norm)) throw new InvalidOperationException($"iteration {iteration}: non-finite gradient norm {norm}; lower learning_rate");
                lossSum += loss;
                normSum += norm;
                if (ppo)
                {
                    var (valueLoss, _) = _critic!.ValueLossGradients(_criticGradients!, mb.Batch, mb.Values!, mb.Returns!, _config.ValueClip, _config.ValueCoef);
                    double criticNorm = _criticOptimizer!.Update();
                    if (!double.IsFinite(criticNorm)) throw new InvalidOperationException($"iteration {iteration}: non-finite critic gradient norm {criticNorm}; lower critic_learning_rate");
                    valueLossSum += valueLoss;
                }
                steps++;   // not inside observer?.(…): that would skip the count when there is no observer
                observer?.StageAdvanced(steps);
            }
        seconds["training"] = clock.Elapsed.TotalSeconds;

        // ---- 4. draft refresh (and the updated policy's entropy) ----
        clock.Restart();
        double entropySum = 0;
        long entropyTokens = 0;
        double klBefore = 0, klAfter = 0, accBefore = 0, accAfter = 0;
        long draftTokens = 0;
        observer?.StageStarted(iteration, "draft refresh", minibatches.Count);
        done = 0;
        foreach (var mb in minibatches)
        {
            var teacher = _policyGraphs.FullLogits(_policy.Arena, mb.Batch);
            (double h, long n) = Entropy(mb.Batch, teacher, _policy.Spec.VocabSize);
            entropySum += h;
            entropyTokens += n;
            if (_distiller is not null)
            {
                var stats = _distiller.Refresh(mb.Batch, teacher, () => _draftGraphs!.FullLogits(_draft!.Arena, mb.Batch), _config.DraftRefreshSteps);
                klBefore += stats.KlBefore * n; klAfter += stats.KlAfter * n; accBefore += stats.AcceptanceBefore * n; accAfter += stats.AcceptanceAfter * n;
                draftTokens += n;
            }
            observer?.StageAdvanced(++done);
        }
        seconds["draft_refresh"] = clock.Elapsed.TotalSeconds;

        // ---- 5. generation's copy of the weights (the Vulkan dense executor's device buffers; free for the others) ----
        clock.Restart();
        _policyModel.RefreshWeights();
        _draftModel?.RefreshWeights();
        _instances?.RefreshWeights();
        seconds["weight_refresh"] = clock.Elapsed.TotalSeconds;

        var lengths = results.Select(r => (double)r.Tokens.Length).OrderBy(x => x).ToArray();
        double mean = rewards.Average();
        var s = outcome.Stats;
        return new IterationMetrics
        {
            Iteration = iteration,
            RewardMean = mean,
            RewardStd = Math.Sqrt(rewards.Average(r => (r - mean) * (r - mean))),
            Accuracy = accuracy,
            Kl = tokens == 0 ? 0 : klSum / tokens,
            Entropy = entropyTokens == 0 ? 0 : entropySum / entropyTokens,
            Loss = steps == 0 ? 0 : lossSum / steps,
            GradNorm = steps == 0 ? 0 : normSum / steps,
            ResponseLengthMean = lengths.Average(),
            ResponseLengthP50 = Percentile(lengths, 0.5),
            ResponseLengthP99 = Percentile(lengths, 0.99),
            Seconds = seconds,
            GenerationTokensPerSecond = s.TokensGenerated / Math.Max(outcome.WallSeconds, 1e-9),
            MeanAcceptedPerStep = s.MeanAcceptedPerSampleStep,
            MeanEmittedPerSampleStep = s.MeanEmittedPerSampleStep,
            StrategyHistogram = s.StrategyHistogram.ToDictionary(kv => kv.Key.ToString(), kv => kv.Value),
            Migrations = outcome.Cluster is { } c ? c.Migrations + c.Recomputes : 0,
            DraftKlBefore = draftTokens == 0 ? null : klBefore / draftTokens,
            DraftKlAfter = draftTokens == 0 ? null : klAfter / draftTokens,
            DraftAcceptanceBefore = draftTokens == 0 ? null : accBefore / draftTokens,
            DraftAcceptanceAfter = draftTokens == 0 ? null : accAfter / draftTokens,
            ValueLoss = ppo ? (steps == 0 ? 0 : valueLossSum / steps) : null,
            ValueMean = ppo ? critic.ValueMean : null,
            ExplainedVariance = ppo ? critic.ExplainedVariance : null,
        };
    }

    private sealed class Minibatch(int[] rows, SequenceBatch batch)
    {
        public int[] Rows { get; } = rows;
        public SequenceBatch Batch { get; } = batch;
        public float[]? Old, Reference, Advantages, Values, Returns;

        /// <summary>PPO: per row, the critic's value after the last token of a response that was cut (0 for one that ended).</summary>
        public double[]? ValueAtCut;
    }

    /// <summary>
    /// PPO's targets from the inference stage's log-probs and critic values: per-token rewards r_t = −β(log π_old −
    /// log π_ref) with the outcome reward added on the last token of a response that ended, GAE (γ, λ) per response
    /// (bootstrapped from the critic's value at the cut for a response cut at max_new_tokens; see
    /// <see cref="Advantages.PpoResponseTargets"/>), advantages whitened over all response tokens of the iteration;
    /// fills each minibatch's advantages and returns [B, T]. Returns the mean value and the explained variance of the
    /// returns by the values.
    /// </summary>
    private (double ValueMean, double ExplainedVariance) PpoTargets(List<Minibatch> minibatches, double[] rewards, IReadOnlyList<SampleResult> results)
    {
        // [minibatch][row]: GAE over the row's response tokens.
        var targets = minibatches.Select(mb => Enumerable.Range(0, mb.Rows.Length).Select(row =>
        {
            var values = mb.Batch.Gather(mb.Values!, row).Select(v => (double)v).ToArray();
            var (advantages, returns) = Advantages.PpoResponseTargets(mb.Batch.Gather(mb.Old!, row), mb.Batch.Gather(mb.Reference!, row), values,
                rewards[mb.Rows[row]], results[mb.Rows[row]].FinishReason, mb.ValueAtCut![row], _config.KlBeta, _config.Gamma, _config.GaeLambda);
            return (Advantages: advantages, Returns: returns, Values: values);
        }).ToArray()).ToArray();
        var rows = targets.SelectMany(m => m).ToArray();

        var whitened = rows.SelectMany(r => r.Advantages).ToArray();
        Advantages.Whiten(whitened);
        int at = 0;
        for (int m = 0; m < minibatches.Count; m++)
        {
            minibatches[m].Advantages = minibatches[m].Batch.Scatter(targets[m].Select(r => r.Advantages.Select(_ => (float)whitened[at++]).ToArray()).ToArray());
            minibatches[m].Returns = minibatches[m].Batch.Scatter(targets[m].Select(r => r.Returns.Select(x => (float)x).ToArray()).ToArray());
        }

        static double Variance(double[] x)
        {
            if (x.Length == 0) return 0;
            double mean = x.Average();
            return x.Average(v => (v - mean) * (v - mean));
        }
        double varReturns = Variance(rows.SelectMany(r => r.Returns).ToArray());
        double varResidual = Variance(rows.SelectMany(r => r.Returns.Zip(r.Values, (g, v) => g - v)).ToArray());
        double valueMean = rows.SelectMany(r => r.Values).DefaultIfEmpty(0).Average();
        return (valueMean, varReturns > 0 ? 1 - varResidual / varReturns : 0);
    }

    private static (double Sum, long Count) Entropy(SequenceBatch batch, float[] logits, int vocab)
    {
        double sum = 0;
        long count = 0;
        for (int at = 0; at < batch.Batch * batch.Length; at++)
        {
            if (batch.LossMask[at] == 0) continue;
            var row = logits.AsSpan(at * vocab, vocab);
            double max = double.NegativeInfinity;
            foreach (var l in row) max = Math.Max(max, l);
            double z = 0, e = 0;
            foreach (var l in row) { double w = Math.Exp(l - max); z += w; e += w * (l - max); }
            sum += Math.Log(z) - e / z;
            count++;
        }
        return (sum, count);
    }

    /// <summary>Nearest-rank percentile of an ascending array (0 for an empty one).</summary>
    private static double Percentile(double[] sorted, double q) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];

    /// <param name="ConfigSha256">The run's config.json hash (absent in checkpoints written before it was kept).</param>
    private sealed record CheckpointState(int Iteration, string? ConfigSha256 = null);

    /// <summary>
    /// Writes checkpoints/iter-NNNNNN (policy, draft and PPO's critic in HF layout, optimizer states, iteration) into a temporary
    /// folder, renames it into place, then points <c>latest</c> at it: a run killed at any moment leaves the previous
    /// checkpoint whole.
    /// </summary>
    private void SaveCheckpoint(int iteration)
    {
        string name = $"iter-{iteration:D6}";
        AtomicFile.WriteFolder(Path.Combine(_out, CheckpointsFolder, name), temp =>
        {
            SaveModel(Path.Combine(temp, "policy"), _policy, _policyConfig);
            if (_draft is not null) SaveModel(Path.Combine(temp, "draft"), _draft, _draftConfig!);
            _optimizer.Save(Path.Combine(temp, "policy_optimizer.bin"));
            _critic?.Save(Path.Combine(temp, CriticFolder), _tokenizer);
            _criticOptimizer?.Save(Path.Combine(temp, "critic_optimizer.bin"));
            _distiller?.Optimizer.Save(Path.Combine(temp, "draft_optimizer.bin"));
            AtomicFile.WriteText(Path.Combine(temp, "state.json"), JsonSerializer.Serialize(new CheckpointState(iteration, _configSha256)));
        });
        AtomicFile.WriteText(Path.Combine(_out, LatestFile), name + "\n");
    }

    private void SaveModel(string folder, TransformerWeights weights, ModelConfig config) =>
        Checkpoint.Save(folder, config, weights.ToHostTensors(), _tokenizer, TensorDType.F32);

    /// <summary>The latest complete checkpoint folder of a run, or null.</summary>
    /// <summary>
    /// The draft refresh's session: on one intra-op thread unless <c>threads</c> is given. Split over several threads,
    /// ONNX Runtime's distillation gradients differ in their last bits from run to run (measured on the default draft
    /// with 4 minibatches of 16 responses up to 256 tokens: every tensor differed between identical runs; the policy's
    /// loss and logits graphs repeated exactly), which made seeded runs irreproducible (issue 17 item 9).
    /// </summary>
    internal static OnnxSessionOptions DistillationSession(OnnxSessionOptions session, int threads) =>
        session with { IntraOpThreads = threads > 0 ? threads : 1 };

    /// <summary>
    /// Whether a seeded run of <paramref name="config"/> repeats bit for bit, as measured (printed by <c>train</c> at
    /// start): with speculation off, one generation instance and the default threads or <c>--threads 1</c>, it does.
    /// Adaptive speculation picks strategies by measured step times (the same distribution, other draws), several
    /// instances share samples by timing, and several threads split the draft refresh.
    /// </summary>
    public static string Reproducibility(RlhfConfig config)
    {
        var reasons = new List<string>();
        if (!config.Speculation.IsOff) reasons.Add($"speculation {config.Speculation} drafts by measured step times");
        if (config.Instances > 1) reasons.Add($"{config.Instances} instances move samples by timing");
        if (config.Threads > 1) reasons.Add($"--threads {config.Threads} splits the draft refresh, whose sums then differ in their last bits");
        return reasons.Count == 0
            ? $"reproducible: a run with seed {config.Seed} and these settings repeats bit for bit"
            : $"not bit-identical from run to run ({string.Join("; ", reasons)}): bit-identical runs need speculation off, one instance and the default threads or --threads 1";
    }

    public static string? LatestCheckpoint(string runFolder)
    {
        string latest = Path.Combine(runFolder, LatestFile);
        if (!File.Exists(latest)) return null;
        string folder = Path.Combine(runFolder, CheckpointsFolder, File.ReadAllText(latest).Trim());
        return Directory.Exists(folder) ? folder : throw new InvalidDataException($"{latest}: names checkpoint '{folder}', which does not exist");
    }

    public void Dispose()
    {
        DisposeParts();
        _run.Dispose();
    }

    /// <summary>Disposes what was built; safe on a trainer whose constructor failed part way (fields still null).</summary>
    private void DisposeParts()
    {
        _distiller?.Dispose();
        _draftGraphs?.Dispose();
        _policyGraphs?.Dispose();
        _gradients?.Dispose();
        _critic?.Dispose();
        _criticGradients?.Dispose();
        _instances?.Dispose();
        _rewardModel?.Dispose();
        _draftModel?.Dispose();
        _policyModel?.Dispose();
        _draft?.Dispose();
        _reference?.Dispose();
        _policy?.Dispose();
        _backend?.Dispose();
    }
}
