using System.Diagnostics;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Generation;

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
    private readonly GeneratorSettings _settings;
    private readonly SuffixProposer _suffix = new();
    private readonly List<SuffixProposer> _clusterSuffixes = new(); // instance k's, kept across cluster runs
    private CostModel? _cost;
    private AcceptanceEstimator? _acceptance; // the single instance's, kept across runs (RLHF iterations) like the cost model

    public Generator(ITargetModel policy, ITargetModel? draft, GeneratorSettings settings)
    {
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        if (draft is not null && draft.VocabSize != policy.VocabSize)
            throw new ArgumentException($"draft model: vocabulary {draft.VocabSize} differs from the policy's {policy.VocabSize}", nameof(draft));
        if (!settings.IsAdaptive && settings.Strategy.Fixed is { Proposer: ProposerKind.DraftModel } s && draft is null)
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

    /// <summary>
    /// The cost model, loaded from the settings' profile or measured now when none is in use yet (also for a fixed
    /// strategy: the simulator needs it whatever the instances run).
    /// </summary>
    public CostModel EnsureCost() => _cost ??= LoadOrProfile();

    /// <summary>The strategies an instance's step chooses among: the adaptive candidates, or the one fixed strategy.</summary>
    public IReadOnlyList<Strategy> StepStrategies =>
        _settings.IsAdaptive ? _settings.Candidates ?? DefaultCandidates(_draft is not null) : [_settings.Strategy.Fixed];

    /// <summary>Most samples an instance decodes together.</summary>
    public int MaxBatch => _settings.MaxBatch;

    /// <summary>The suffix proposer, kept across runs so later iterations draft from earlier rollouts of the same prompts.</summary>
    public SuffixProposer Suffix => _suffix;

    /// <summary>
    /// The suffix proposers of <see cref="RunCluster"/>'s instances (instance k's at k), kept across runs; after each
    /// run every one also indexes the responses the other instances generated, so all draft from every earlier rollout.
    /// </summary>
    public IReadOnlyList<SuffixProposer> ClusterSuffixes => _clusterSuffixes;

    public GeneratorRunResult Run(IReadOnlyList<GenerationRequest> requests, Action<GenerationInstance>? afterStep = null)
    {
        ArgumentNullException.ThrowIfNull(requests);
        if (_settings.IsAdaptive) _cost ??= LoadOrProfile();
        var (options, acceptance) = Options(_draft is not null, _cost, _acceptance);
        _acceptance ??= acceptance;
        return RunOn(requests, _suffix, _settings.IsAdaptive ? _cost : null, options, acceptance, afterStep);
    }

    /// <summary>
    /// Runs <paramref name="requests"/> without changing what later <see cref="Run"/> calls see: drafts come from the
    /// caller's <paramref name="state"/> (its own suffix proposer and acceptance statistics, e.g. an evaluation's, kept
    /// across its runs; created when null) and the draft model, and the cost model is a frozen copy of this
    /// generator's, so its steps refine nothing. Greedy requests give the tokens <see cref="Run"/> would; random numbers
    /// are keyed by the requests' own seeds and ids.
    /// </summary>
    public (GeneratorRunResult Outcome, DetachedRunState State) RunDetached(IReadOnlyList<GenerationRequest> requests, DetachedRunState? state = null)
    {
        ArgumentNullException.ThrowIfNull(requests);
        state ??= new DetachedRunState();
        CostModel? frozen = null;
        if (_settings.IsAdaptive)
        {
            _cost ??= LoadOrProfile();
            string profile = Path.Combine(Path.GetTempPath(), $"rlhfspec-cost-{Guid.NewGuid():N}.json");
            try
            {
                _cost.Save(profile);
                frozen = CostModel.Load(profile);
            }
            finally { File.Delete(profile); }
        }
        var (options, acceptance) = Options(_draft is not null, frozen, state.Acceptance);
        state.Acceptance ??= acceptance;
        return (RunOn(requests, state.Suffix, frozen, options, acceptance, null), state);
    }

    private GeneratorRunResult RunOn(IReadOnlyList<GenerationRequest> requests, SuffixProposer suffix, CostModel? cost, InstanceOptions options,
        AcceptanceEstimator? acceptance, Action<GenerationInstance>? afterStep)
    {
        var proposers = new List<IProposer> { suffix };
        // The draft proposer times its forwards into the cost model (online refinement; a frozen profile ignores them).
        DraftModelProposer? draftProposer = _draft is null ? null : new DraftModelProposer(_draft, cost);
        if (draftProposer is not null) proposers.Add(draftProposer);

        var choices = new Dictionary<int, Dictionary<Strategy, long>>();
        var clock = Stopwatch.StartNew();
        using var instance = new GenerationInstance(_policy, proposers, options, acceptance, cost);
        try
        {
            foreach (var r in requests) instance.Enqueue(r);
            instance.RunToCompletion(i =>
            {
                if (i.LastPlan is { } plan)
                {
                    int batch = plan.DraftDepths.Length;
                    if (!choices.TryGetValue(batch, out var h)) choices[batch] = h = new();
                    h[plan.Strategy] = h.GetValueOrDefault(plan.Strategy) + 1;
                }
                afterStep?.Invoke(i);
            });
        }
        finally { draftProposer?.Dispose(); }
        double wall = clock.Elapsed.TotalSeconds;
        var byId = instance.Finished.ToDictionary(r => r.Request.SampleId);
        var ordered = requests.Select(r => byId[r.SampleId]).ToArray();
        return new GeneratorRunResult(ordered, instance.Stats, wall, cost ?? _cost, choices);
    }

    /// <summary>
    /// Generates on <paramref name="instances"/> instances (threads), each over its own models from
    /// <paramref name="models"/> (own KV caches and sessions; weights may be shared), with the cluster's assignment and
    /// reallocation. For <c>adaptive</c>, the cost model is profiled once (on this generator's models) and every
    /// instance gets a frozen copy of it (instances run concurrently, so they do not refine one shared model).
    /// </summary>
    public GeneratorRunResult RunCluster(IReadOnlyList<GenerationRequest> requests, int instances, Func<int, (ITargetModel Policy, ITargetModel? Draft)> models,
        Cluster.ClusterOptions options)
    {
        ArgumentNullException.ThrowIfNull(requests);
        ArgumentNullException.ThrowIfNull(models);
        if (instances < 1) throw new ArgumentException($"instances: {instances}, must be >= 1", nameof(instances));
        string? profile = null;
        if (_settings.IsAdaptive)
        {
            _cost ??= LoadOrProfile();
            profile = Path.Combine(Path.GetTempPath(), $"rlhfspec-cost-{Guid.NewGuid():N}.json");
            _cost.Save(profile);
        }
        var owned = new List<IDisposable>();
        try
        {
            using var cluster = new Cluster.GenerationCluster(instances, k =>
            {
                var (policy, draft) = models(k);
                if (draft is not null && draft.VocabSize != policy.VocabSize)
                    throw new ArgumentException($"draft model of instance {k}: vocabulary {draft.VocabSize} differs from the policy's {policy.VocabSize}");
                var cost = profile is null ? null : CostModel.Load(profile);
                while (_clusterSuffixes.Count <= k) _clusterSuffixes.Add(new SuffixProposer());
                var proposers = new List<IProposer> { _clusterSuffixes[k] };
                if (draft is not null)
                {
                    var proposer = new DraftModelProposer(draft, cost);
                    owned.Add(proposer);
                    proposers.Add(proposer);
                }
                var (instanceOptions, acceptance) = Options(draft is not null, cost);
                var instance = new GenerationInstance(policy, proposers, instanceOptions with { Index = k }, acceptance, cost);
                owned.Add(instance);
                return instance;
            }, options);
            var result = cluster.Run(requests);
            foreach (var suffix in _clusterSuffixes.Take(instances))
                foreach (var r in result.Results) suffix.Remember(r.Request.SampleId, r.Request.Prompt, r.Tokens);
            var byId = result.Results.ToDictionary(r => r.Request.SampleId);
            return new GeneratorRunResult(requests.Select(r => byId[r.SampleId]).ToArray(), result.Stats.Total, result.Stats.WallSeconds, _cost,
                new Dictionary<int, Dictionary<Strategy, long>>()) { Cluster = result.Stats };
        }
        finally
        {
            foreach (var d in owned) d.Dispose();
            if (profile is not null) File.Delete(profile);
        }
    }

    private (InstanceOptions Options, AcceptanceEstimator? Acceptance) Options(bool hasDraft, CostModel? cost, AcceptanceEstimator? kept = null)
    {
        var options = new InstanceOptions { MaxBatch = _settings.MaxBatch, MaxPrefillTokens = _settings.MaxPrefillTokens, StopTokens = _settings.StopTokens, StepTrace = _settings.StepTrace };
        if (!_settings.IsAdaptive) return (options with { Planner = new FixedStrategyPlanner(_settings.Strategy.Fixed) }, null);
        // Optimistic decisions (an upper confidence bound on acceptance) so candidates with few observations get tried.
        var acceptance = kept ?? new AcceptanceEstimator(optimism: 1);
        var candidates = _settings.Candidates ?? DefaultCandidates(hasDraft);
        return (options with { Planner = new StrategySelector(cost!, acceptance, candidates) }, acceptance);
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
