using RLHFSpec.Compute.Model;
using System.Diagnostics;
using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;
using RLHFSpec.Compute.Generation.Selection;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// One generation instance's step loop: admit waiting samples (one ragged prefill, first token sampled from its
/// logits) → each step pick a strategy (fixed, or the selector's for the live batch) → proposers draft → one
/// tree-verify forward over every sample's pending token and draft → the verify kernel → commit the accepted
/// tokens and the next token (the model keeps their KV, drops the rest) → finish on a stop token, the token
/// limit or the context limit. When the KV cache runs out, the youngest samples are preempted and later
/// re-admitted by re-prefilling their committed tokens: nothing is lost or duplicated, and because every random
/// number is keyed by (seed, sample, position) the tokens do not change.
/// </summary>
public sealed class GenerationInstance : IDisposable
{
    private readonly ITargetModel _model;
    private readonly Dictionary<ProposerKind, IProposer> _proposers;
    private readonly InstanceOptions _options;
    private readonly AcceptanceEstimator? _acceptance;
    private readonly CostModel? _cost;
    private readonly List<SampleState> _waiting = new();
    private readonly List<SampleState> _live = new();
    private readonly List<SampleState> _admitting = new(); // taken from _waiting, being prefilled
    private readonly List<int> _leaders = new();           // per sample of _admitting: the one whose prompt prefill it shares, or −1
    private readonly List<SampleResult> _finished = new();
    private long _admissions;
    private DeviceBuffer<float>? _logits, _draftLogits;

    public GenerationInstance(ITargetModel model, IEnumerable<IProposer> proposers, InstanceOptions options, AcceptanceEstimator? acceptance = null, CostModel? cost = null)
    {
        _model = model;
        _proposers = proposers.ToDictionary(p => p.Kind);
        _options = options;
        _acceptance = acceptance;
        _cost = cost;
        if (options.Planner is null) throw new ArgumentException("instance options: give a planner", nameof(options));
        foreach (var s in options.Planner.Strategies)
            if (!s.IsOff && !_proposers.ContainsKey(s.Proposer))
                throw new ArgumentException($"strategy {s}: no {s.Proposer} proposer was given", nameof(options));
    }

    public GenerationStats Stats { get; } = new();

    public int LiveCount => _live.Count;
    public int WaitingCount => _waiting.Count;
    public IReadOnlyList<SampleResult> Finished => _finished;

    /// <summary>The target model (its KV cache holds the live samples).</summary>
    public ITargetModel Model => _model;

    /// <summary>Most samples decoding at once.</summary>
    public int MaxBatch => _options.MaxBatch;

    /// <summary>Samples decoding (their committed tokens are in the model's cache), oldest admission first.</summary>
    public IReadOnlyList<SampleState> LiveSamples => _live;

    /// <summary>Samples waiting for admission: new ones, preempted ones and ones moved here to be recomputed.</summary>
    public IReadOnlyList<SampleState> WaitingSamples => _waiting;

    /// <summary>The last step's plan when selecting adaptively.</summary>
    public StepPlan? LastPlan { get; private set; }

    public void Enqueue(GenerationRequest request)
    {
        request.Validate(_model.MaxContext, _model.VocabSize);
        _waiting.Add(new SampleState(request, 0));
    }

    /// <summary>
    /// Takes in a sample that another instance gave up (<see cref="TakeOut"/>, or its samples after a failure): it
    /// waits at the head of the queue when it has started (its committed tokens are re-prefilled on admission, the
    /// recompute path of migration), behind the others when it has not. Not thread-safe: call between steps.
    /// </summary>
    public void Inject(SampleState sample)
    {
        ArgumentNullException.ThrowIfNull(sample);
        if (sample.Finished is not null) throw new ArgumentException($"sample {sample.SampleId} has already finished", nameof(sample));
        if (_live.Contains(sample) || _waiting.Contains(sample)) throw new ArgumentException($"sample {sample.SampleId} is already in this instance", nameof(sample));
        sample.Request.Validate(_model.MaxContext, _model.VocabSize);
        sample.InCache = false;
        if (sample.Generated > 0) _waiting.Insert(0, sample);
        else _waiting.Add(sample);
    }

    /// <summary>
    /// Removes a live or waiting sample, releasing its KV and its proposers' state here; its tokens and log-probs
    /// stay in the returned state, ready for <see cref="Inject"/> into another instance. Call between steps.
    /// </summary>
    public SampleState TakeOut(long sampleId)
    {
        var s = _live.Find(x => x.SampleId == sampleId);
        if (s is not null)
        {
            _model.Release(s.SampleId);
            _live.Remove(s);
        }
        else
        {
            s = _waiting.Find(x => x.SampleId == sampleId) ?? throw new ArgumentException($"sample {sampleId} is neither live nor waiting here", nameof(sampleId));
            _waiting.Remove(s);
        }
        Leave(s);
        s.InCache = false;
        return s;
    }

    /// <summary>
    /// Moves a live sample with its KV to <paramref name="target"/>: the model copies the committed KV into the
    /// target's model (<see cref="IMigratableModel"/>), the target decodes the sample from its next step on with no
    /// re-prefill (its proposers learn it from the tokens; a draft model catches up there). Returns false, changing
    /// nothing, when the sample is not live here, a model cannot copy, or the target's cache is full. Neither
    /// instance may be stepping.
    /// </summary>
    public bool TryMoveWithKv(long sampleId, GenerationInstance target)
    {
        if (MovableWithKv(sampleId, target) is not { } movable || !movable.Model.TryCopySampleTo(sampleId, target._model, sampleId)) return false;
        var s = movable.Sample;
        target.CheckCopied(s);
        TakeOut(sampleId);
        target.Join(s);
        return true;
    }

    /// <summary>
    /// Starts an overlapped move of a live sample to <paramref name="target"/>: the sample leaves this instance's batch
    /// and proposers now (on this instance's thread, between its steps), its committed KV stays in this model, captured
    /// for a copy the target runs on its own thread (<see cref="CompleteMoveWithKv"/>) while this instance steps its
    /// other samples; once the copy has ended, <see cref="ReleaseMoved"/> frees the KV here. Returns null, changing
    /// nothing, when the sample is not live here or the models cannot copy concurrently (then use <see cref="TryMoveWithKv"/>).
    /// </summary>
    public PendingMove? BeginMoveWithKv(long sampleId, GenerationInstance target)
    {
        if (MovableWithKv(sampleId, target) is not { } movable || movable.Model.Snapshot(sampleId, target._model) is not { } snapshot) return null;
        var s = movable.Sample;
        _live.Remove(s);
        Leave(s);
        return new PendingMove(s, snapshot, this, target);
    }

    /// <summary>
    /// The target's half of an overlapped move (on this, the target's, thread while it does not step; the source may
    /// be stepping): copies the KV in and decodes the sample from the next step on. When the copy cannot be made
    /// (this cache is full, or the batch is) the sample waits here to be recomputed instead; returns whether it was
    /// copied. Either way the source must then <see cref="ReleaseMoved"/> it.
    /// </summary>
    public bool CompleteMoveWithKv(PendingMove move)
    {
        ArgumentNullException.ThrowIfNull(move);
        if (!ReferenceEquals(move.Target, this)) throw new ArgumentException("move: it targets another instance", nameof(move));
        var s = move.Sample;
        if (_live.Count < _options.MaxBatch && move.Snapshot.TryCopyTo(_model, s.SampleId))
        {
            CheckCopied(s);
            Join(s);
            return true;
        }
        Inject(s);
        return false;
    }

    /// <summary>A sample that leaves this instance (taken out or moved): its proposers' state and acceptance statistics here go.</summary>
    private void Leave(SampleState s)
    {
        foreach (var p in _proposers.Values) p.MigratedOut(s);
        _acceptance?.Forget(s.SampleId);
    }

    /// <summary>A sample whose committed KV is in this model (prefilled, or copied in) joins the live batch, youngest.</summary>
    private void Join(SampleState s)
    {
        s.InCache = true;
        s.AdmissionOrder = _admissions++;
        _live.Add(s);
        foreach (var p in _proposers.Values) p.Admit(s);
    }

    /// <summary>
    /// The common start of both KV moves: checks the target, and returns the live sample with its KV in this model
    /// and the model that can copy it, or null when there is none (not live here, not in the cache, or a model that
    /// cannot migrate).
    /// </summary>
    private (SampleState Sample, IMigratableModel Model)? MovableWithKv(long sampleId, GenerationInstance target)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (ReferenceEquals(target, this)) throw new ArgumentException("target: a sample cannot move to its own instance", nameof(target));
        var s = _live.Find(x => x.SampleId == sampleId);
        return s is not null && s.InCache && _model is IMigratableModel migratable ? (s, migratable) : null;
    }

    /// <summary>A KV copy into this model must hold every committed token but the pending one.</summary>
    private void CheckCopied(SampleState s)
    {
        if (_model.CommittedLength(s.SampleId) != s.Tokens.Count - 1)
            throw new InvalidOperationException($"sample {s.SampleId}: the copy holds {_model.CommittedLength(s.SampleId)} committed tokens, the sample {s.Tokens.Count - 1}");
    }

    /// <summary>Frees the KV this model still holds for a sample moved out by <see cref="BeginMoveWithKv"/> (call between steps, after the copy).</summary>
    public void ReleaseMoved(long sampleId) => _model.Release(sampleId);

    /// <summary>
    /// After a step threw: hands over every sample that has not been returned in <see cref="Finished"/> (live,
    /// waiting, and any being admitted when it failed), and forgets them. The model and proposers are not touched —
    /// their state is unknown after a failure — so the samples are re-admitted elsewhere from their committed tokens.
    /// </summary>
    public IReadOnlyList<SampleState> Abandon()
    {
        var all = _admitting.Concat(_live).Concat(_waiting).Distinct().ToList();
        _admitting.Clear();
        _live.Clear();
        _waiting.Clear();
        foreach (var s in all) s.InCache = false;
        return all;
    }

    /// <summary>Runs until every enqueued sample has finished; results in order of completion.</summary>
    public IReadOnlyList<SampleResult> RunToCompletion(Action<GenerationInstance>? afterStep = null)
    {
        while (Step()) afterStep?.Invoke(this);
        return _finished;
    }

    /// <summary>Admits what fits, then runs one decoding step. Returns false once nothing is left to do.</summary>
    public bool Step()
    {
        // Samples can finish at admission (a stop token first), so admit until some are live.
        while (_live.Count == 0)
        {
            if (_waiting.Count == 0) return false;
            if (Admit() == 0) throw new InvalidOperationException("no sample could be admitted although the instance is idle (KV cache too small?)");
        }
        Admit();
        Decode();
        return _live.Count > 0 || _waiting.Count > 0;
    }

    /// <summary>Admits (prefills) what fits; returns how many samples were admitted.</summary>
    private int Admit()
    {
        var batch = _admitting;
        TakeAdmissions(batch);
        if (batch.Count == 0) return 0;
        var clock = Stopwatch.StartNew();
        int tokens = Prefill(batch);
        int admitted = batch.Count;
        batch.Clear();
        Stats.PrefillTokens += tokens;
        Stats.PrefillSeconds += clock.Elapsed.TotalSeconds;
        RetireFinished();
        return admitted;
    }

    /// <summary>
    /// Moves waiting samples into <paramref name="batch"/>, oldest first, while the batch, the prefill budget and the KV
    /// cache allow, and records in <see cref="_leaders"/> for each the index of the first fresh sample before it in the
    /// batch with the same prompt, whose prefill it shares (−1: it feeds its own tokens — it leads, has started
    /// already, or sharing is off). A sharing sample feeds nothing, so it does not count against the prefill budget;
    /// it still reserves its KV, which the copy reuses.
    /// </summary>
    private void TakeAdmissions(List<SampleState> batch)
    {
        batch.Clear();
        _leaders.Clear();
        int tokens = 0;
        var first = _options.SharePromptPrefill && _model is IMigratableModel ? new Dictionary<PromptKey, int>() : null;
        while (_waiting.Count > 0 && _live.Count + batch.Count < _options.MaxBatch)
        {
            var s = _waiting[0];
            int feed = FeedOnAdmission(s);
            var key = first is not null && s.Generated == 0 ? new PromptKey(s.Request.Prompt) : null;
            int leader = key is not null && first!.TryGetValue(key, out int l) ? l : -1;
            if (leader < 0 && batch.Count > 0 && tokens + feed > _options.MaxPrefillTokens) break;
            if (!_model.TryReserve(s.SampleId, feed))
            {
                if (_live.Count + batch.Count == 0)
                    throw new InvalidOperationException($"sample {s.SampleId}: its {feed} tokens do not fit the KV cache even alone; raise the memory budget");
                break;
            }
            _waiting.RemoveAt(0);
            batch.Add(s);
            _leaders.Add(leader);
            if (leader >= 0) continue;
            tokens += feed;
            if (key is not null) first![key] = batch.Count - 1;
        }
    }

    /// <summary>
    /// One ragged prefill of the batch's committed tokens; new samples get their first token sampled from the logits
    /// of their last prompt token. A sample sharing a prompt (<see cref="_leaders"/>) feeds nothing: after the
    /// prefill its reservation is swapped for a copy of its leader's KV, and its first token is drawn from its
    /// leader's logits row with its own random numbers. Every sample then joins the live batch. Returns the tokens fed.
    /// </summary>
    private int Prefill(List<SampleState> batch)
    {
        var leaders = _leaders.ToArray();
        var fed = Enumerable.Range(0, batch.Count).Where(b => leaders[b] < 0).ToArray();
        var offsets = new int[fed.Length + 1];
        var ids = new long[fed.Length];
        var lastToken = new int[batch.Count];
        var feedTokens = new List<int>();
        var parents = new List<int>();
        for (int f = 0; f < fed.Length; f++)
        {
            var s = batch[fed[f]];
            ids[f] = s.SampleId;
            int feed = FeedOnAdmission(s);
            for (int t = 0; t < feed; t++) { feedTokens.Add(s.Tokens[t]); parents.Add(t - 1); }
            offsets[f + 1] = feedTokens.Count;
            lastToken[fed[f]] = feedTokens.Count - 1;
        }
        var fresh = Enumerable.Range(0, batch.Count).Where(b => batch[b].Generated == 0).ToArray();
        var rows = fresh.Select(b => lastToken[leaders[b] < 0 ? b : leaders[b]]).ToArray();
        var logits = Logits((long)Math.Max(rows.Length, 1) * _model.VocabSize);
        _model.Forward(new ForwardBatch { SampleIds = ids, TokenOffsets = offsets, Tokens = feedTokens.ToArray(), Parents = parents.ToArray(), LogitRows = rows }, logits);
        var first = new int[fresh.Length];
        var logProbs = new float[fresh.Length];
        if (fresh.Length > 0)
        {
            // The first token: the same race over the target as an empty draft's verification would run.
            var settings = fresh.Select(b => { var s = batch[b]; var p = s.Request.Sampling; p.SampleId = (uint)s.SampleId; p.Position = s.NextPosition; p.Stream = RngStreams.Target; return p; }).ToArray();
            _model.Backend.Sample(settings, logits, _model.VocabSize, first, logProbs);
        }
        var keep = new int[feedTokens.Count];
        for (int f = 0; f < fed.Length; f++)
            for (int t = offsets[f]; t < offsets[f + 1]; t++) keep[t] = t - offsets[f];
        _model.Commit(ids, offsets, keep);
        CopySharedPrompts(batch, leaders);
        foreach (var s in batch) Join(s);
        for (int f = 0; f < fresh.Length; f++) Emit(batch[fresh[f]], [first[f]], [logProbs[f]]);
        return feedTokens.Count;
    }

    /// <summary>
    /// Each sample sharing its leader's prompt gives back the KV it reserved and takes a copy of the leader's committed
    /// prompt KV instead: the same number of blocks, so the copy cannot run out of them.
    /// </summary>
    private void CopySharedPrompts(List<SampleState> batch, int[] leaders)
    {
        for (int b = 0; b < batch.Count; b++)
        {
            if (leaders[b] < 0) continue;
            long id = batch[b].SampleId;
            _model.Release(id);
            if (!((IMigratableModel)_model).TryCopySampleTo(batch[leaders[b]].SampleId, _model, id))
                throw new InvalidOperationException($"sample {id}: the copy of its prompt's KV found no free blocks after its own reservation was released");
            Stats.SharedPrefillTokens += batch[b].Tokens.Count;
        }
    }

    /// <summary>Tokens fed when (re-)admitting: the prompt, or everything committed but the pending token.</summary>
    private static int FeedOnAdmission(SampleState s) => s.Generated == 0 ? s.Tokens.Count : s.Tokens.Count - 1;

    /// <summary>One decoding step: plan → draft → reserve → verify → commit (each below).</summary>
    private void Decode()
    {
        var stepClock = Stopwatch.StartNew();
        var live = _live.ToList();
        var plan = PlanStep(live);
        var strategy = plan.Strategy;
        var trees = Draft(live, strategy, plan.DraftDepths, out double draftSeconds);
        var step = Reserve(live, trees);
        if (step.Count == 0) { RetireFinished(); return; }
        var verified = Verify(step, out double forwardSeconds);
        var planned = new Dictionary<SampleState, int>(live.Count);
        for (int i = 0; i < live.Count; i++) planned[live[i]] = plan.DraftDepths[i];
        long emitted = CommitStep(step, strategy, verified, planned);
        double stepSeconds = stepClock.Elapsed.TotalSeconds;
        _cost?.ObserveStepOverhead(verified.Rows, stepSeconds - draftSeconds - forwardSeconds);
        if (_options.StepTrace is { } trace)
        {
            var runnerUp = plan.RunnerUp();
            trace.Record(new StepRecord(_options.Index, Stats.Steps + 1, strategy.ToString(), plan.Exploring, live.Count, step.Count, verified.Rows, emitted,
                plan.PredictedSeconds, _options.Planner.Adaptive ? _cost?.TimeCorrection(strategy, step.Count) ?? 1 : 1, stepSeconds,
                draftSeconds, forwardSeconds, plan.PredictedGoodput, plan.OffGoodput, runnerUp?.Strategy.ToString() ?? "", runnerUp?.Goodput ?? 0));
        }
        if (_options.Planner.Adaptive && step.Count == live.Count)
            _cost?.ObserveStepTime(strategy, step.Count, plan.PredictedSeconds, stepSeconds);
        Stats.RecordStep(strategy, step.Count, emitted, stepSeconds);
        RetireFinished();
    }

    /// <summary>Plan: the strategy and each live sample's draft depth, capped so the draft fits the context limit.</summary>
    private StepPlan PlanStep(List<SampleState> live)
    {
        var draft = _proposers.GetValueOrDefault(ProposerKind.DraftModel) as DraftModelProposer;
        // The draft model's catch-up feeds every token it has not seen (a sample's whole context the first time it drafts).
        var plan = _options.Planner.Plan(live.Select(s => new LiveSample(s.SampleId, s.Tokens.Count, s.RemainingTokens,
            draft is null ? 1 : Math.Max(1, s.Tokens.Count - draft.Model.CommittedLength(s.SampleId)))).ToArray());
        if (_options.Planner.Adaptive) LastPlan = plan;
        var depths = plan.DraftDepths;
        for (int i = 0; i < live.Count; i++)
            depths[i] = Math.Max(0, Math.Min(depths[i], _model.MaxContext - live[i].Tokens.Count - 1));
        return plan;
    }

    /// <summary>Draft: the strategy's proposer drafts a tree per sample (empty trees for <c>off</c> or all-zero depths).</summary>
    private DraftTree[] Draft(List<SampleState> live, Strategy strategy, int[] depths, out double seconds)
    {
        var clock = Stopwatch.StartNew();
        DraftTree[] trees = strategy.IsOff || depths.All(d => d == 0)
            ? live.Select(_ => new DraftTree(DraftKind.Deterministic)).ToArray()
            : _proposers[strategy.Proposer].Propose(live, strategy, depths);
        seconds = clock.Elapsed.TotalSeconds;
        Stats.DraftSeconds += seconds;
        if (strategy.Proposer == ProposerKind.Suffix) _cost?.ObserveSuffix(live.Count, seconds);
        return trees;
    }

    /// <summary>Room in the KV cache for every sample's pending token and draft; preempts the youngest when full. Returns the samples that step.</summary>
    private List<(SampleState Sample, DraftTree Tree)> Reserve(List<SampleState> live, DraftTree[] trees)
    {
        var step = new List<(SampleState Sample, DraftTree Tree)>();
        for (int i = 0; i < live.Count; i++) step.Add((live[i], trees[i]));
        for (int i = 0; i < step.Count; i++)
        {
            var (s, tree) = step[i];
            while (!_model.TryReserve(s.SampleId, 1 + tree.Count))
            {
                if (_live.Count == 1)
                {
                    // Alone and still too big: without its draft, or else never (the cache cannot hold its next token,
                    // and preempting it would re-admit it to the same place for ever). It ends as a context cut.
                    if (tree.Count > 0) { step[i] = (s, tree = new DraftTree(DraftKind.Deterministic)); continue; }
                    s.Finished = FinishReason.Context;
                    step.RemoveAt(i--);
                    break;
                }
                var victim = _live.MaxBy(x => x.AdmissionOrder)!;
                int at = step.FindIndex(x => x.Sample == victim);
                Preempt(victim);
                if (at >= 0) { step.RemoveAt(at); if (at < i) i--; }
                if (victim == s) { i--; break; }
            }
        }
        return step;
    }

    /// <summary>
    /// Verify: one forward over every sample's pending token and draft nodes (tree mask from the parents), then the
    /// verify kernel over its logits: the accepted nodes of each draft and the next token.
    /// </summary>
    private StepVerification Verify(List<(SampleState Sample, DraftTree Tree)> step, out double forwardSeconds)
    {
        var clock = Stopwatch.StartNew();
        var (offsets, nodeOffsets, logits) = VerifyForward(step);
        forwardSeconds = clock.Elapsed.TotalSeconds;
        Stats.VerifyForwardSeconds += forwardSeconds;
        clock.Restart();
        int samples = step.Count, rows = offsets[samples];
        var settings = step.Select(x => { var p = x.Sample.Request.Sampling; p.SampleId = (uint)x.Sample.SampleId; p.Position = x.Sample.NextPosition; return p; }).ToArray();
        var draftLogits = GatherDraftLogits(step, offsets);
        var result = new StepVerification(offsets, nodeOffsets, new int[samples], new int[nodeOffsets[samples]], new int[samples], new float[rows]);
        _model.Backend.Verify(
            new VerifyBatch
            {
                NodeOffsets = nodeOffsets, DraftTokens = step.SelectMany(x => x.Tree.Tokens).ToArray(), Parents = step.SelectMany(x => x.Tree.Parents).ToArray(),
                Params = settings, Kinds = step.Select(x => x.Tree.Kind).ToArray(), VocabSize = _model.VocabSize,
            },
            logits, draftLogits,
            new VerifyOutputs { AcceptedCount = result.AcceptedCount, AcceptedNodes = result.AcceptedNodes, NextToken = result.NextToken, LogProbs = result.LogProbs });
        Stats.VerifyKernelSeconds += clock.Elapsed.TotalSeconds;
        return result;
    }

    /// <summary>
    /// The sampled drafts' q in the verification's layout // [rows, vocab] (sample b's rows from offsets[b]), copied
    /// on the device from where the proposer left them; through the host only for a draft on another backend. Null
    /// when no sample has q.
    /// </summary>
    private DeviceBuffer<float>? GatherDraftLogits(List<(SampleState Sample, DraftTree Tree)> step, int[] offsets)
    {
        if (!step.Any(x => x.Tree.Kind == DraftKind.Sampled && x.Tree.DraftLogits is not null && x.Tree.Count > 0)) return null;
        int vocab = _model.VocabSize;
        var draftLogits = DraftLogits((long)offsets[step.Count] * vocab);
        var bySource = new Dictionary<DeviceBuffer<float>, (List<int> From, List<int> To)>();
        for (int b = 0; b < step.Count; b++)
        {
            if (step[b].Tree.DraftLogits is not { } q) continue;
            if (!ReferenceEquals(q.Backend, _model.Backend))
            {
                var host = new float[(long)q.Rows * vocab];
                q.Buffer.Read(host, (long)q.FirstRow * vocab);
                draftLogits.Write(host, (long)offsets[b] * vocab);
                continue;
            }
            if (!bySource.TryGetValue(q.Buffer, out var rows)) bySource[q.Buffer] = rows = (new List<int>(), new List<int>());
            for (int j = 0; j < q.Rows; j++) { rows.From.Add(q.FirstRow + j); rows.To.Add(offsets[b] + j); }
        }
        foreach (var (source, rows) in bySource)
            _model.Backend.CopyRows(source, draftLogits, rows.From.ToArray(), rows.To.ToArray(), vocab);
        return draftLogits;
    }

    /// <summary>The tree-verify forward: row offsets // [samples + 1], draft-node offsets // [samples + 1], logits // [rows, vocab].</summary>
    private (int[] Offsets, int[] NodeOffsets, DeviceBuffer<float> Logits) VerifyForward(List<(SampleState Sample, DraftTree Tree)> step)
    {
        var clock = Stopwatch.StartNew();
        int samples = step.Count;
        var ids = new long[samples];
        var offsets = new int[samples + 1];
        var nodeOffsets = new int[samples + 1];
        var feedTokens = new List<int>();
        var feedParents = new List<int>();
        double pairs = 0;
        for (int b = 0; b < samples; b++)
        {
            var (s, tree) = step[b];
            ids[b] = s.SampleId;
            feedTokens.Add(s.Pending);
            feedParents.Add(-1);
            for (int j = 0; j < tree.Count; j++) { feedTokens.Add(tree.Tokens[j]); feedParents.Add(tree.Parents[j] + 1); }
            offsets[b + 1] = feedTokens.Count;
            nodeOffsets[b + 1] = nodeOffsets[b] + tree.Count;
            pairs += (1.0 + tree.Count) * (s.Tokens.Count + (1 + tree.Count) / 2.0);
        }
        int rows = feedTokens.Count;
        var logits = Logits((long)rows * _model.VocabSize);
        var attentionClock = _model as IAttentionClock;
        double attentionBefore = attentionClock?.AttentionSeconds ?? 0;
        _model.Forward(new ForwardBatch
        {
            SampleIds = ids, TokenOffsets = offsets, Tokens = feedTokens.ToArray(), Parents = feedParents.ToArray(),
            LogitRows = Enumerable.Range(0, rows).ToArray(),
        }, logits);
        _cost?.ObserveVerify(rows, pairs, clock.Elapsed.TotalSeconds, attentionClock?.AttentionSeconds - attentionBefore);
        return (offsets, nodeOffsets, logits);
    }

    /// <summary>
    /// Commit: the model keeps each sample's pending token and accepted path (one batched call), then rolls back
    /// the rejected draft nodes of the samples that had any (<see cref="RollBackRejected"/>); the accepted tokens and
    /// the next token are emitted; proposers and the acceptance statistics learn what was accepted. Returns the
    /// tokens emitted.
    /// </summary>
    private long CommitStep(List<(SampleState Sample, DraftTree Tree)> step, Strategy strategy, StepVerification v, Dictionary<SampleState, int> planned)
    {
        int samples = step.Count;
        var ids = new long[samples];
        var keepOffsets = new int[samples + 1];
        var keep = new int[samples + v.AcceptedNodes.Length];
        for (int b = 0; b < samples; b++)
        {
            ids[b] = step[b].Sample.SampleId;
            int at = keepOffsets[b];
            keep[at] = 0; // the pending token
            for (int j = 0; j < v.AcceptedCount[b]; j++) keep[at + 1 + j] = v.AcceptedNodes[v.NodeOffsets[b] + j] + 1;
            keepOffsets[b + 1] = at + 1 + v.AcceptedCount[b];
        }
        _model.Commit(ids, keepOffsets, keep.AsSpan(0, keepOffsets[samples]));
        RollBackRejected(step, v, ids);
        long emittedTotal = 0;
        for (int b = 0; b < samples; b++)
        {
            var (s, tree) = step[b];
            var accepted = v.AcceptedNodes.AsSpan(v.NodeOffsets[b], v.AcceptedCount[b]);
            var emitted = new int[accepted.Length + 1];
            for (int j = 0; j < accepted.Length; j++) emitted[j] = tree.Tokens[accepted[j]];
            emitted[^1] = v.NextToken[b];
            emittedTotal += Emit(s, emitted, v.LogProbs.AsSpan(v.Offsets[b], emitted.Length));
            if (!strategy.IsOff && tree.Count > 0)
            {
                _proposers[strategy.Proposer].Accepted(s, tree, accepted);
                _acceptance?.Observe(s.SampleId, strategy, tree.MaxDepth, accepted.Length);
                Stats.DraftTokensProposed += tree.Count;
                Stats.DraftTokensAccepted += accepted.Length;
            }
            else if (!strategy.IsOff && planned.GetValueOrDefault(s) > 0)
                // Asked to draft, the proposer found nothing (no suffix match): for the selector that is a draft whose
                // first token failed, or it would predict every sample's tokens from the samples that had a match.
                _acceptance?.Observe(s.SampleId, strategy, 1, 0);
        }
        _acceptance?.EndStep();
        return emittedTotal;
    }

    /// <summary>
    /// Rollback: the draft nodes that verification rejected leave the model's cache (one batched call over the samples
    /// with any; bookkeeping only, no KV moves). Reuses <paramref name="ids"/>, the step's sample ids, as scratch.
    /// </summary>
    private void RollBackRejected(List<(SampleState Sample, DraftTree Tree)> step, StepVerification v, long[] ids)
    {
        int rejected = 0;
        for (int b = 0; b < step.Count; b++)
            if (step[b].Tree.Count > v.AcceptedCount[b]) ids[rejected++] = step[b].Sample.SampleId;
        if (rejected > 0) _model.Rollback(ids.AsSpan(0, rejected));
    }

    /// <summary>Appends emitted tokens up to a stop token or a limit; tells the proposers; returns how many were kept.</summary>
    private int Emit(SampleState s, ReadOnlySpan<int> tokens, ReadOnlySpan<float> logProbs)
    {
        int kept = 0;
        for (; kept < tokens.Length && s.Finished is null; kept++)
        {
            s.Tokens.Add(tokens[kept]);
            s.LogProbs.Add(logProbs[kept]);
            if (_options.StopTokens.Contains(tokens[kept])) s.Finished = FinishReason.Stop;
            else if (s.Generated >= s.Request.MaxNewTokens) s.Finished = FinishReason.Length;
            else if (s.Tokens.Count >= _model.MaxContext) s.Finished = FinishReason.Context;
        }
        Stats.TokensGenerated += kept;
        foreach (var p in _proposers.Values) p.Append(s, tokens[..kept]);
        return kept;
    }

    private void Preempt(SampleState s)
    {
        _model.Release(s.SampleId);
        foreach (var p in _proposers.Values) p.Release(s);
        s.InCache = false;
        _live.Remove(s);
        _waiting.Insert(0, s);
        Stats.Preemptions++;
    }

    private void RetireFinished()
    {
        foreach (var s in _live.Where(x => x.Finished is not null).ToList())
        {
            _model.Release(s.SampleId);
            foreach (var p in _proposers.Values) p.Release(s);
            _acceptance?.Forget(s.SampleId);
            _live.Remove(s);
            _finished.Add(s.ToResult());
        }
    }

    private DeviceBuffer<float> Logits(long length) => Grow(ref _logits, length, "target logits");

    private DeviceBuffer<float> DraftLogits(long length) => Grow(ref _draftLogits, length, "draft logits");

    private DeviceBuffer<float> Grow(ref DeviceBuffer<float>? buffer, long length, string name) => _model.Backend.Reuse(ref buffer, length, name);

    public void Dispose()
    {
        _logits?.Dispose();
        _draftLogits?.Dispose();
    }
}
