using System.Diagnostics;
using System.Text;
using System.Text.Json;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.IO;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The RLHF loop. Each iteration: <b>generation</b> (the policy writes <c>samples_per_prompt</c> responses to each
/// prompt through the speculative <see cref="Generator"/>: adaptive strategy selection, suffix drafts over siblings
/// and earlier rollouts, the draft model), <b>inference</b> (task, rule or reward-model rewards, old and reference log-probs, ragged
/// minibatches bucketed by length), <b>training</b> (GRPO: group-normalised advantages, clipped surrogate, k3 KL to the
/// frozen reference; or PPO: a critic initialised from the policy's trunk, per-token rewards of −β·KL with the outcome
/// reward on the last token, GAE, whitened advantages, clipped surrogate with an entropy bonus, clipped value loss;
/// gradients from the project's autodiff on ONNX Runtime; AdamW in place on the weights the generation model
/// reads), <b>draft refresh</b> (forward-KL distillation of the draft toward the updated policy on
/// the same rollouts). Each stage is a class of its own (<see cref="GenerationStage"/>, <see cref="InferenceStage"/>,
/// <see cref="TrainingStage"/>, <see cref="DraftRefreshStage"/>) that takes the iteration's <see cref="IterationBatch"/>
/// and returns a new one; GRPO and PPO are <see cref="IRlhfAlgorithm"/>s. Each stage runs under a named timer; metrics
/// go to a JSONL and a plot; checkpoints are written atomically and a run resumes from its latest one
/// (<see cref="RunCheckpoints"/>).
/// </summary>
public sealed class RlhfTrainer : IDisposable
{
    public const string MetricsFile = "metrics.jsonl", PlotFile = "metrics.png", ConfigFile = "config.json", LatestFile = "latest", SummaryFile = "summary.json";
    public const string CheckpointsFolder = "checkpoints", ReferenceFolder = "reference", CriticFolder = "critic";

    private readonly RlhfConfig _config;
    private readonly RunFolder _run;
    private readonly string _out;
    private readonly IReadOnlyList<string>? _filePrompts;
    private readonly RunWeights _weights;
    private readonly IRlhfAlgorithm _algorithm;
    private readonly RunModels _models;
    private readonly RunCheckpoints _checkpoints;
    private readonly GenerationStage _generation;
    private readonly InferenceStage _inference;
    private readonly TrainingStage _training;
    private readonly DraftRefreshStage _refresh;
    private readonly HeldOutEvaluation? _evaluation;
    private readonly EvaluationStage? _evaluator;
    private readonly List<IterationMetrics> _history = new();
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
            config.Validate();
            if (config.Reallocate && config.Instances < 2)
                throw new ArgumentException($"reallocate: 'on' moves samples between generation instances; set instances >= 2 (it is {config.Instances})");
            _config = config;
            var reward = RewardRule.Parse(config.Reward);
            _out = run.FullPath;
            _filePrompts = ReadPrompts(config, reward);
            ResumePoint? resume = null;
            if (run.Mode == RunFolderMode.Resume)
            {
                run.RemoveStaleTemporaries();
                resume = RunCheckpoints.Find(run, config);
            }
            var session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(config.Ep), IntraOpThreads = config.Threads };
            _weights = new RunWeights(RunCheckpoints.PolicySource(resume, policyFolder), RunCheckpoints.DraftSource(resume, draftFolder), config, reward, _filePrompts, session);
            _algorithm = IRlhfAlgorithm.Create(config, resume?.Latest, policyFolder, _out, _weights, session);
            _models = new RunModels(config, _weights, resume is null ? policyFolder : Path.Combine(_out, ReferenceFolder), session);
            _checkpoints = new RunCheckpoints(_out, resume?.ConfigSha256 ?? RunCheckpoints.ConfigHash(config), _weights, _models, _algorithm);
            _evaluation = ResolveEvaluation(config, reward, resume is not null);

            var scorer = new RewardScorer(_weights.Tokenizer, reward, _weights.RewardModel, config.MinibatchSize);
            _generation = new GenerationStage(config, _weights.Tokenizer, _models.Generator, _models.Instances);
            _inference = new InferenceStage(config, _weights, _models, _algorithm, scorer, taskPrompts: _filePrompts is null);
            _training = new TrainingStage(config, _weights, _models, _algorithm);
            _refresh = new DraftRefreshStage(config, _weights, _models);
            _evaluator = _evaluation is null ? null : new EvaluationStage(config, _evaluation, _models.Generator, scorer, _out);

            if (resume is not null) Resume(resume);
            else Start();
        }
        catch
        {
            DisposeParts();
            run.Abandon();
            throw;
        }
    }

    /// <summary>The training prompts of a prompts file (null for the default task's), checked against the reward.</summary>
    private static IReadOnlyList<string>? ReadPrompts(RlhfConfig config, RewardRule reward)
    {
        if (config.Prompts is null) return null;
        var prompts = PromptFile.Read(config.Prompts);
        if (reward.NeedsTaskPrompts)
            foreach (var (p, i) in prompts.Select((p, i) => (p, i)))
                try { ArithmeticTask.Answer(p); }
                catch (FormatException e) { throw new InvalidDataException($"prompts '{config.Prompts}': prompt {i}: the task reward needs default-task prompts ({e.Message}); set reward to regex:PATTERN or exact:TEXT for other prompts"); }
        return prompts;
    }

    /// <summary>The held-out evaluation set (see <see cref="HeldOutEvaluation.Resolve"/>), checked against the reward.</summary>
    private HeldOutEvaluation? ResolveEvaluation(RlhfConfig config, RewardRule reward, bool resume)
    {
        var evaluation = HeldOutEvaluation.Resolve(config, _out, resume, _filePrompts is null, _weights.Tokenizer, _models.PolicyModel.MaxContext);
        if (evaluation is not null && reward.NeedsTaskPrompts && !evaluation.AreTaskPrompts)
            throw new InvalidDataException($"{evaluation.Source}: the task reward needs default-task prompts; set reward to regex:PATTERN or exact:TEXT for other prompts");
        return evaluation;
    }

    /// <summary>A new run's first writes, after everything loaded: a start that fails leaves an old run (--overwrite) whole.</summary>
    private void Start()
    {
        NextIteration = 1;
        _run.PrepareForWriting();
        _checkpoints.WriteStart(_config);
        _evaluation?.Save(Path.Combine(_out, HeldOutEvaluation.PromptsFile));
    }

    /// <summary>A resume: the checkpoint's optimizer states and the metrics of the iterations it covers.</summary>
    private void Resume(ResumePoint resume)
    {
        _checkpoints.LoadOptimizers(resume);
        NextIteration = resume.State.Iteration + 1;
        var (baseline, history) = RunCheckpoints.ReadMetrics(_out, resume);
        _baseline = baseline;
        _history.AddRange(history);
        // A run started before its evaluation set was saved: keep the set it scores from now on.
        if (_evaluation is not null && !File.Exists(Path.Combine(_out, HeldOutEvaluation.PromptsFile)))
            _evaluation.Save(Path.Combine(_out, HeldOutEvaluation.PromptsFile));
    }

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
    public TransformerWeights Policy => _weights.Policy;

    /// <summary>PPO's critic (null for GRPO).</summary>
    public ValueModel? Critic => _algorithm.Critic;

    /// <summary>The responses of the last iteration's generation stage, in request order.</summary>
    public IReadOnlyList<SampleResult> LastRollouts { get; private set; } = [];
    public TransformerWeights? Draft => _weights.Draft;

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
            if (NextIteration % _config.CheckpointEvery == 0 || NextIteration == _config.Iterations) _checkpoints.Save(NextIteration);
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
        var evaluations = Evaluations;
        PairedChange? paired = null;
        if (evaluations.Count >= 2
            && EvaluationAnswers.Read(_out, evaluations[0].Iteration) is { } first && EvaluationAnswers.Read(_out, evaluations[^1].Iteration) is { } last
            && first.Count == last.Count && first.Count > 0)
            paired = PairedChange.Of(first.Select(a => a.Correct).ToList(), last.Select(a => a.Correct).ToList(), evaluations[0].Iteration, evaluations[^1].Iteration,
                first.Select(a => a.Prompt).ToList());
        return RunSummary.From(_out, _config, _history, evaluations, _evaluation?.Prompts.Count ?? 0, policies, LatestCheckpoint(_out)) with { EvalPaired = paired };
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

    /// <summary>Scores the held-out set with the current policy (see <see cref="EvaluationStage"/>).</summary>
    private EvaluationMetrics Evaluate(int iteration, IRlhfObserver? observer)
    {
        var (metrics, results) = _evaluator!.Run(iteration, observer);
        LastEvaluation = results;
        return metrics;
    }

    /// <summary>Prompts of an iteration: the default task seeded by (seed, iteration), or the file's, cycled.</summary>
    public string[] PromptsOf(int iteration)
    {
        int n = _config.PromptsPerIteration;
        if (_filePrompts is { } file) return Enumerable.Range(0, n).Select(k => file[(int)(((long)(iteration - 1) * n + k) % file.Count)]).ToArray();
        var task = new ArithmeticTask(unchecked(_config.Seed * 1_000_003 + iteration), _config.TaskMaxTerms);
        return Enumerable.Range(0, n).Select(_ => task.Next().Prompt).ToArray();
    }

    /// <summary>One iteration: each stage under its named timer, one <see cref="IterationBatch"/> passed from stage to stage.</summary>
    private IterationMetrics Iteration(int iteration, IRlhfObserver? observer)
    {
        var seconds = new Dictionary<string, double>();
        var clock = Stopwatch.StartNew();
        double Lap()
        {
            double elapsed = clock.Elapsed.TotalSeconds;
            clock.Restart();
            return elapsed;
        }

        var batch = _generation.Run(iteration, PromptsOf(iteration), observer);
        seconds["generation"] = Lap();
        LastRollouts = batch.Results;
        batch = _inference.Run(batch, observer);
        seconds["inference"] = Lap();
        batch = _training.Run(batch, observer);
        seconds["training"] = Lap();
        batch = _refresh.Run(batch, observer, DraftRefreshStage.Due(_history, _config.DraftRefreshTolerance));
        seconds["draft_refresh"] = Lap();
        _models.RefreshGenerationWeights();
        seconds["weight_refresh"] = Lap();
        return batch.ToMetrics(seconds);
    }

    /// <summary>
    /// The draft refresh's session: on one intra-op thread unless <c>threads</c> is given (measured faster than 2
    /// threads on 2 shared cores). It was introduced because the distillation gradients differed from run to run on 2
    /// threads; the cause was the embedding gradient's unsynchronised ScatterND (see Autodiff's Gather rule), since
    /// replaced, so any thread count now repeats.
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
        return reasons.Count == 0
            ? $"reproducible: a run with seed {config.Seed} and these settings repeats bit for bit"
            : $"not bit-identical from run to run ({string.Join("; ", reasons)}): bit-identical runs need speculation off and one instance";
    }

    /// <summary>The latest complete checkpoint folder of a run, or null.</summary>
    public static string? LatestCheckpoint(string runFolder) => RunCheckpoints.Latest(runFolder);

    public void Dispose()
    {
        DisposeParts();
        _run.Dispose();
    }

    /// <summary>Disposes what was built; safe on a trainer whose constructor failed part way (fields still null).</summary>
    private void DisposeParts()
    {
        _models?.Dispose();
        _algorithm?.Dispose();
        _weights?.Dispose();
    }
}
