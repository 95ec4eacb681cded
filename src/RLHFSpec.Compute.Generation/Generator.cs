using System.Diagnostics;
using RLHFSpec.Compute.Generation.Proposers;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation;

/// <summary>The outcome of <see cref="Generator.Run"/>: results in request order, the instance's stats, wall time and the step plans' record.</summary>
public sealed record GenerateOutcome(IReadOnlyList<GenerationResult> Results, GenerationStats Stats, double WallSeconds, CostModel? Cost,
    IReadOnlyDictionary<int, Dictionary<string, long>> ChoicesByBatchSize);

/// <summary>
/// The generation stage as one call: builds the proposers (suffix always; draft model when given), the cost model
/// (frozen profile file, or measured at start-up on the running device) and acceptance estimator for
/// <c>adaptive</c>, runs one <see cref="GenerationInstance"/> to completion and reports what happened. Used by
/// <c>rlhfspec generate</c> and by the RLHF loop.
/// </summary>
public sealed class Generator
{
    private readonly ITargetModel _policy;
    private readonly ITargetModel? _draft;
    private readonly GenerateSettings _settings;
    private readonly SuffixProposer _suffix = new();
    private CostModel? _cost;

    public Generator(ITargetModel policy, ITargetModel? draft, GenerateSettings settings)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        if (draft is not null && draft.VocabSize != policy.VocabSize)
            throw new ArgumentException($"draft model: vocabulary {draft.VocabSize} differs from the policy's {policy.VocabSize}", nameof(draft));
        if (!settings.IsAdaptive && Strategy.Parse(settings.Strategy, "--strategy") is { Proposer: ProposerKind.DraftModel } s && draft is null)
            throw new ArgumentException($"--strategy {s}: needs a draft model (--draft DIR)", nameof(settings));
        _policy = policy;
        _draft = draft;
        _settings = settings;
    }

    /// <summary>The adaptive candidates: suffix chains and trees always, draft-model chains and trees when a draft model is present.</summary>
    public static IReadOnlyList<Strategy> DefaultCandidates(bool hasDraft)
    {
        var list = new List<string> { "suffix:2", "suffix:4", "suffix:8", "suffix-tree:6,2,12" };
        if (hasDraft) list.AddRange(["chain:1", "chain:2", "chain:4", "chain:6", "tree:3,2,6", "tree:5,3,16"]);
        return list.Select(s => Strategy.Parse(s)).ToArray();
    }

    /// <summary>The cost model in use (after the first adaptive run).</summary>
    public CostModel? Cost => _cost;

    /// <summary>The suffix proposer, kept across runs so later iterations draft from earlier rollouts of the same prompts.</summary>
    public SuffixProposer Suffix => _suffix;

    public GenerateOutcome Run(IReadOnlyList<GenerationRequest> requests, Action<GenerationInstance>? afterStep = null)
    {
        ArgumentNullException.ThrowIfNull(requests);
        var proposers = new List<IProposer> { _suffix };
        if (_settings.IsAdaptive) _cost ??= LoadOrProfile();
        // The draft proposer times its forwards into the cost model (online refinement; a frozen profile ignores them).
        DraftModelProposer? draftProposer = _draft is null ? null : new DraftModelProposer(_draft, _settings.IsAdaptive ? _cost : null);
        if (draftProposer is not null) proposers.Add(draftProposer);
        var options = new GenerationOptions { MaxBatch = _settings.MaxBatch, MaxPrefillTokens = _settings.MaxPrefillTokens, StopTokens = _settings.StopTokens };
        AcceptanceEstimator? acceptance = null;
        if (_settings.IsAdaptive)
        {
            acceptance = new AcceptanceEstimator();
            var candidates = _settings.Candidates ?? DefaultCandidates(_draft is not null);
            options = options with { FixedStrategy = null, Selector = new StrategySelector(_cost!, acceptance, candidates) };
        }
        else options = options with { FixedStrategy = Strategy.Parse(_settings.Strategy, "--strategy") };

        var choices = new Dictionary<int, Dictionary<string, long>>();
        var clock = Stopwatch.StartNew();
        using var instance = new GenerationInstance(_policy, proposers, options, acceptance, _settings.IsAdaptive ? _cost : null);
        try
        {
            foreach (var r in requests) instance.Enqueue(r);
            instance.RunToCompletion(i =>
            {
                if (i.LastPlan is { } plan)
                {
                    int batch = plan.DraftDepths.Length;
                    if (!choices.TryGetValue(batch, out var h)) choices[batch] = h = new();
                    string key = plan.Strategy.ToString();
                    h[key] = h.GetValueOrDefault(key) + 1;
                }
                afterStep?.Invoke(i);
            });
        }
        finally { draftProposer?.Dispose(); }
        double wall = clock.Elapsed.TotalSeconds;
        var byId = instance.Finished.ToDictionary(r => r.Request.SampleId);
        var ordered = requests.Select(r => byId[r.SampleId]).ToArray();
        return new GenerateOutcome(ordered, instance.Stats, wall, _cost, choices);
    }

    private CostModel LoadOrProfile()
    {
        string device = _policy.Backend.Info.Id;
        if (_settings.CostProfilePath is { } path && File.Exists(path)) return CostModel.Load(path);
        var cost = CostProfiler.Profile(_policy, _draft, device, Math.Min(_settings.ProfileMaxTokens, _policy.MaxContext));
        if (_settings.CostProfilePath is { } save) cost.Save(save);
        return cost;
    }
}
