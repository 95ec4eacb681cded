using System.Diagnostics;
using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// N generation instances in one process, each stepping on its own worker thread over its own model (own KV
/// cache and ONNX Runtime sessions; the caller's factory decides what they share, e.g. one weights arena).
/// Samples are first assigned round-robin or by predicted length (<see cref="LengthPredictor"/>, which learns from
/// every run's responses); with reallocation on, the <see cref="Reallocator"/> moves samples from a loaded
/// instance to a drained one at the loaded instance's step boundary — live ones with their KV copied
/// (<see cref="IMigratableModel"/>) or recomputed on the target, whichever the measured costs say is cheaper. An
/// instance whose step throws (or that is stopped) loses nothing: its samples are re-admitted elsewhere from their
/// committed tokens. Random numbers are keyed by (seed, sample, position), so a sample's tokens do not depend on
/// where it ran.
/// </summary>
/// <remarks>
/// Coordination: one lock. A worker takes it only between steps — to pick up samples queued for it, to publish
/// what finished, to measure, and (the donor) to run the reallocator — and an instance is touched by another
/// thread only while it is not stepping (its worker is waiting or between the lock and its next step), so
/// <see cref="GenerationInstance"/> itself needs no locking. A KV copy overlaps the donor's steps where the models
/// allow it (<see cref="IMigratableModel.Snapshot"/>: host-memory caches, or instances on backends of their own, a
/// Vulkan device serialising its operations per device): at its boundary the donor takes the sample
/// out of its batch and hands the receiver a <see cref="PendingMove"/>; the receiver copies on its own thread while
/// the donor steps on; the donor frees the sample's KV at its first boundary after the copy (or at once if it is not
/// stepping). Where they do not (instances sharing one GPU backend), the copy runs between steps, blocking both workers.
/// </remarks>
public sealed class GenerationCluster : IDisposable
{
    private enum SlotState { Ready, Stepping, Failed }

    private sealed class Slot(int index, GenerationInstance instance)
    {
        public int Index { get; } = index;
        public GenerationInstance Instance { get; } = instance;
        public SlotState State;
        public readonly List<SampleState> Inbox = new(); // given to it while it stepped (failure re-admissions)
        public readonly List<Incoming> Incoming = new(); // overlapped moves to copy in before its next step
        public readonly List<long> ToRelease = new();    // samples moved out whose copy has ended: free their KV here
        public long Steps;
        public int FinishedSeen;
        public long StepsSeen;
        public readonly StepTimeFit StepTime = new();
        public double CachedWork;      // predicted work at its last boundary (read while it steps)
        public bool StopRequested;
        public bool Idle;              // waiting for work since its last step
        public string? Failure;
        // This run.
        public double Busy, LastFinish;
        public long RunSteps;
        public int RunFinished;
    }

    /// <summary>An overlapped move handed to a receiver, with the donor's step count when it was handed over.</summary>
    private sealed record Incoming(PendingMove Move, Slot From, long FromSteps);

    private readonly object _gate = new();
    private readonly Slot[] _slots;
    private readonly Reallocator _reallocator;
    private long _copyBytesMeasured;
    private double _copySecondsMeasured;

    // The current run.
    private readonly List<GenerationResult> _results = new();
    private readonly HashSet<long> _finishedIds = new();
    private int _expected;
    private bool _done, _running;
    private Exception? _fatal;
    private Stopwatch _clock = new();
    private long _migrations, _bytesMoved, _recomputes, _reassigned, _readmissions, _overlapped;
    private double _copySeconds;

    /// <param name="instances">Instances to create.</param>
    /// <param name="factory">Creates instance k (its own model, proposers and options); the caller owns the models.</param>
    public GenerationCluster(int instances, Func<int, GenerationInstance> factory, ClusterOptions? options = null, LengthPredictor? predictor = null)
    {
        if (instances < 1) throw new ArgumentOutOfRangeException(nameof(instances), instances, "must be >= 1");
        ArgumentNullException.ThrowIfNull(factory);
        Options = options ?? new ClusterOptions();
        Options.Validate();
        Predictor = predictor ?? new LengthPredictor();
        _reallocator = new Reallocator(Options.DrainThreshold, Options.RequireGain);
        _slots = new Slot[instances];
        try
        {
            for (int k = 0; k < instances; k++) _slots[k] = new Slot(k, factory(k) ?? throw new InvalidOperationException($"the factory returned no instance {k}"));
        }
        catch
        {
            foreach (var s in _slots) s?.Instance.Dispose();
            throw;
        }
    }

    public ClusterOptions Options { get; }

    /// <summary>Learns response lengths per prompt from every run; drives the initial assignment and the reallocator.</summary>
    public LengthPredictor Predictor { get; }

    public int InstanceCount => _slots.Length;

    /// <summary>Instance <paramref name="k"/> (inspect it only while no run is in progress).</summary>
    public GenerationInstance Instance(int k) => _slots[k].Instance;

    /// <summary>Whether instance <paramref name="k"/> has failed or been stopped (it takes no more work).</summary>
    public bool IsOut(int k)
    {
        lock (_gate) return _slots[k].State == SlotState.Failed;
    }

    /// <summary>Stops instance <paramref name="k"/> at its next step boundary; its samples go to the others.</summary>
    public void StopInstance(int k)
    {
        lock (_gate)
        {
            _slots[k].StopRequested = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Generates every request (distinct sample ids) and returns each result exactly once, in order of completion.
    /// Throws when every instance has failed with samples left, naming the failures.
    /// </summary>
    public ClusterResult Run(IReadOnlyList<GenerationRequest> requests)
    {
        ArgumentNullException.ThrowIfNull(requests);
        if (requests.Select(r => r.SampleId).Distinct().Count() != requests.Count) throw new ArgumentException("requests: sample ids must be distinct", nameof(requests));
        Slot[] alive;
        lock (_gate)
        {
            if (_running) throw new InvalidOperationException("the cluster is already running");
            alive = _slots.Where(s => s.State != SlotState.Failed).ToArray();
            if (alive.Length == 0) throw new InvalidOperationException($"every instance is out: {string.Join("; ", _slots.Select(s => $"{s.Index}: {s.Failure}"))}");
            foreach (var s in _slots)
            {
                s.Busy = s.LastFinish = 0;
                s.RunSteps = s.RunFinished = 0;
                s.Idle = false;
                s.FinishedSeen = s.Instance.Finished.Count;
            }
            var assignment = Assign(requests, alive);
            for (int i = 0; i < requests.Count; i++) requests[i].Validate(assignment[i].Instance.Model.MaxContext, assignment[i].Instance.Model.VocabSize);
            for (int i = 0; i < requests.Count; i++) assignment[i].Instance.Enqueue(requests[i]);
            foreach (var s in alive) s.CachedWork = PredictedWork(s);
            _results.Clear();
            _finishedIds.Clear();
            _expected = requests.Count;
            _done = requests.Count == 0;
            _fatal = null;
            _migrations = _bytesMoved = _recomputes = _reassigned = _readmissions = _overlapped = 0;
            _copySeconds = 0;
            _running = true;
            _clock = Stopwatch.StartNew();
        }
        try
        {
            var threads = alive.Select(s => new Thread(() => Worker(s)) { IsBackground = true, Name = $"generation instance {s.Index}" }).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
        }
        finally
        {
            lock (_gate)
            {
                _running = false;
                // No worker runs now: free what donors still hold for samples copied out after their last step.
                foreach (var s in _slots)
                    if (s.State != SlotState.Failed) ReleaseMoved(s);
            }
        }
        double wall = _clock.Elapsed.TotalSeconds;
        if (_fatal is not null) throw new InvalidOperationException($"the cluster failed: {_fatal.Message}", _fatal);
        if (_results.Count != _expected)
            throw new InvalidOperationException($"{_expected - _results.Count} of {_expected} samples did not finish: every instance failed ({string.Join("; ", _slots.Where(s => s.Failure is not null).Select(s => $"{s.Index}: {s.Failure}"))})");
        foreach (var r in _results) Predictor.Observe(r.Request.Prompt, r.Tokens.Length);
        var total = new GenerationStats();
        foreach (var s in _slots) total.Add(s.Instance.Stats);
        var stats = new ClusterStats
        {
            WallSeconds = wall,
            Migrations = _migrations,
            OverlappedMigrations = _overlapped,
            KvBytesMoved = _bytesMoved,
            CopySeconds = _copySeconds,
            Recomputes = _recomputes,
            Reassigned = _reassigned,
            FailureReadmissions = _readmissions,
            Instances = _slots.Select(s => new InstanceRunStats(s.Index, s.Busy, Math.Max(0, wall - s.Busy), s.LastFinish, s.RunSteps, s.RunFinished, s.Failure)).ToArray(),
            Total = total,
        };
        return new ClusterResult(_results.ToArray(), stats);
    }

    private Slot[] Assign(IReadOnlyList<GenerationRequest> requests, Slot[] alive)
    {
        var assignment = new Slot[requests.Count];
        if (Options.Assignment == AssignmentPolicy.RoundRobin)
        {
            for (int i = 0; i < requests.Count; i++) assignment[i] = alive[i % alive.Length];
            return assignment;
        }
        var work = alive.ToDictionary(s => s, PredictedWork);
        var order = Enumerable.Range(0, requests.Count).OrderByDescending(i => Predictor.PredictTotal(requests[i])).ThenBy(i => requests[i].SampleId);
        foreach (int i in order)
        {
            var target = alive.MinBy(s => (work[s], s.Index))!;
            assignment[i] = target;
            work[target] += Predictor.PredictTotal(requests[i]);
        }
        return assignment;
    }

    /// <summary>
    /// One instance's thread: wait for work, copy in the moves handed to it, step, then account the step (results,
    /// timing, releases, rebalancing) under the cluster's lock. Ends when the run is done or the instance failed.
    /// </summary>
    private void Worker(Slot slot)
    {
        var copied = new List<(Incoming Move, bool Copied, double Seconds)>();
        try
        {
            while (WaitForWork(slot) is { } incoming)
            {
                copied.Clear();
                var fault = CopyIn(slot, incoming, copied);
                var clock = Stopwatch.StartNew();
                if (fault is null)
                    try
                    {
                        Options.BeforeStep?.Invoke(slot.Index, slot.Steps);
                        slot.Instance.Step();
                    }
                    catch (Exception e) { fault = e; }
                if (!EndStep(slot, clock.Elapsed.TotalSeconds, incoming, copied, fault)) return;
            }
        }
        catch (Exception e)
        {
            lock (_gate)
            {
                _fatal ??= e;
                _done = true;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>
    /// Blocks until the slot has samples (or moves to copy in) and marks it stepping; returns the moves it takes over,
    /// or null when the run is done or the slot was asked to stop.
    /// </summary>
    private List<Incoming>? WaitForWork(Slot slot)
    {
        lock (_gate)
        {
            while (true)
            {
                if (_done) return null;
                if (slot.StopRequested)
                {
                    Fail(slot, "stopped");
                    Finish();
                    return null;
                }
                ReleaseMoved(slot); // before TakeInbox: a sample may come back while its old KV is still held here
                TakeInbox(slot);
                if (slot.Instance.LiveCount + slot.Instance.WaitingCount + slot.Incoming.Count > 0) break;
                if (!slot.Idle)
                {
                    slot.Idle = true;
                    Options.OnIdle?.Invoke(slot.Index);
                }
                Monitor.Wait(_gate);
            }
            slot.State = SlotState.Stepping;
            slot.Idle = false;
            var incoming = slot.Incoming.ToList();
            slot.Incoming.Clear();
            return incoming;
        }
    }

    /// <summary>Overlapped moves first: copies in what donors handed over (they go on stepping meanwhile); returns the fault that stopped it, if any.</summary>
    private Exception? CopyIn(Slot slot, List<Incoming> incoming, List<(Incoming Move, bool Copied, double Seconds)> copied)
    {
        try
        {
            foreach (var m in incoming)
            {
                Options.BeforeMigrationCopy?.Invoke(slot.Index, m.Move.Sample.SampleId);
                var copy = Stopwatch.StartNew();
                bool ok = slot.Instance.CompleteMoveWithKv(m.Move);
                copied.Add((m, ok, copy.Elapsed.TotalSeconds));
            }
            return null;
        }
        catch (Exception e) { return e; }
    }

    /// <summary>Accounts a step (or its fault) under the lock; false when the slot failed and its thread ends.</summary>
    private bool EndStep(Slot slot, double seconds, List<Incoming> incoming, List<(Incoming Move, bool Copied, double Seconds)> copied, Exception? fault)
    {
        lock (_gate)
        {
            slot.State = SlotState.Ready;
            slot.Steps++;
            slot.RunSteps++;
            slot.Busy += seconds + copied.Sum(c => c.Seconds);
            foreach (var (m, ok, copySeconds) in copied) EndMove(m, ok, copySeconds);
            if (fault is not null)
            {
                // Moves not copied in yet go back to the list: Fail re-admits their samples elsewhere.
                slot.Incoming.InsertRange(0, incoming.Where(m => !copied.Any(c => c.Move == m)));
                Fail(slot, $"{fault.GetType().Name}: {fault.Message}");
            }
            else
            {
                Collect(slot);
                Measure(slot, seconds);
                ReleaseMoved(slot);
                TakeInbox(slot); // the donor moves only samples its instance holds
                if (Options.Reallocate) Rebalance(slot);
                slot.CachedWork = PredictedWork(slot);
            }
            Finish();
            return fault is null;
        }
    }

    /// <summary>Hands the samples queued for a slot (while it stepped) to its instance; call only while it is not stepping.</summary>
    private static void TakeInbox(Slot slot)
    {
        foreach (var s in slot.Inbox) slot.Instance.Inject(s);
        slot.Inbox.Clear();
    }

    /// <summary>Accounts an overlapped move whose copy has ended (or fell back to recompute) and lets its donor free the KV.</summary>
    private void EndMove(Incoming m, bool copied, double seconds)
    {
        if (copied)
        {
            CountCopy(m.Move.Snapshot.Bytes, seconds);
            if (m.From.Steps > m.FromSteps || m.From.State == SlotState.Stepping) _overlapped++;
        }
        else _recomputes++;
        QueueRelease(m.From, m.Move.Sample.SampleId);
    }

    /// <summary>Counts a migration by KV copy; its bytes and seconds also refine the measured copy rate.</summary>
    private void CountCopy(long bytes, double seconds)
    {
        _migrations++;
        _bytesMoved += bytes;
        _copySeconds += seconds;
        _copyBytesMeasured += bytes;
        _copySecondsMeasured += seconds;
    }

    /// <summary>Frees a moved-out sample's KV on its donor: now if the donor is not stepping, else at its next boundary.</summary>
    private void QueueRelease(Slot from, long sampleId)
    {
        if (from.State == SlotState.Failed) return; // its model's state is unknown; nothing runs on it any more
        from.ToRelease.Add(sampleId);
        if (from.State != SlotState.Stepping) ReleaseMoved(from);
    }

    /// <summary>Frees what a slot still holds for samples copied out of it; call only while it is not stepping.</summary>
    private static void ReleaseMoved(Slot slot)
    {
        foreach (long id in slot.ToRelease) slot.Instance.ReleaseMoved(id);
        slot.ToRelease.Clear();
    }

    /// <summary>Ends the run when every sample is in, or when no instance is left to finish the rest; wakes the workers.</summary>
    private void Finish()
    {
        if (_results.Count == _expected || _slots.All(s => s.State == SlotState.Failed)) _done = true;
        Monitor.PulseAll(_gate);
    }

    private void Collect(Slot slot)
    {
        var finished = slot.Instance.Finished;
        for (; slot.FinishedSeen < finished.Count; slot.FinishedSeen++) AddResult(slot, finished[slot.FinishedSeen]);
    }

    private void AddResult(Slot slot, GenerationResult result)
    {
        if (!_finishedIds.Add(result.Request.SampleId)) throw new InvalidOperationException($"sample {result.Request.SampleId} finished twice");
        _results.Add(result);
        slot.LastFinish = _clock.Elapsed.TotalSeconds;
        slot.RunFinished++;
    }

    private void Measure(Slot slot, double seconds)
    {
        var stats = slot.Instance.Stats;
        if (stats.Steps == slot.StepsSeen) return; // nothing decoded (all finished at admission)
        slot.StepsSeen = stats.Steps;
        slot.StepTime.Observe(stats.LastBatch, seconds);
    }

    /// <summary>Takes a failed or stopped instance out and re-admits its samples on the others (least predicted work first).</summary>
    private void Fail(Slot slot, string reason)
    {
        slot.State = SlotState.Failed;
        slot.Failure = reason;
        Collect(slot);
        var orphans = slot.Instance.Abandon().Concat(slot.Inbox).Concat(slot.Incoming.Select(m => m.Move.Sample)).ToList();
        foreach (var m in slot.Incoming) QueueRelease(m.From, m.Move.Sample.SampleId); // their donors still hold the KV
        slot.Inbox.Clear();
        slot.Incoming.Clear();
        slot.ToRelease.Clear();
        slot.CachedWork = 0;
        foreach (var s in orphans.OrderBy(s => s.SampleId))
        {
            if (s.Finished is not null)
            {
                if (!_finishedIds.Contains(s.SampleId)) AddResult(slot, s.ToResult());
                continue;
            }
            var target = _slots.Where(x => x.State != SlotState.Failed).MinBy(x => (Work(x), x.Index));
            if (target is null) return; // nobody left: the run reports the missing samples
            target.Inbox.Add(s);
            target.CachedWork += Predictor.PredictRemaining(s.Request, s.Generated);
            _readmissions++;
        }
    }

    /// <summary>Predicted work of an instance: counted now when it is not stepping, else as of its last boundary.</summary>
    private double Work(Slot slot) => slot.State == SlotState.Stepping ? slot.CachedWork : PredictedWork(slot);

    private double PredictedWork(Slot slot) =>
        slot.Instance.LiveSamples.Concat(slot.Instance.WaitingSamples).Concat(slot.Inbox).Concat(slot.Incoming.Select(m => m.Move.Sample)).Sum(s => Predictor.PredictRemaining(s.Request, s.Generated));

    private void Rebalance(Slot donor)
    {
        var receivers = _slots.Where(s => s != donor && s.State == SlotState.Ready).ToArray();
        if (receivers.Length == 0 || donor.Instance.LiveCount + donor.Instance.WaitingCount < 2) return;
        var plans = _reallocator.Plan(Load(donor, donor), receivers.Select(r => Load(r, donor)).ToArray());
        foreach (var plan in plans)
        {
            var receiver = _slots[plan.To];
            foreach (long id in plan.SampleIds) Move(donor, receiver, id);
        }
    }

    private InstanceLoad Load(Slot slot, Slot donor)
    {
        var samples = slot.Instance.LiveSamples.Concat(slot.Instance.WaitingSamples).Concat(slot.Inbox).Concat(slot.Incoming.Select(m => m.Move.Sample))
            .Select(s => new SampleLoad(s.SampleId, Predictor.PredictRemaining(s.Request, s.Generated), slot == donor ? MoveSeconds(donor, s) : 0))
            .ToArray();
        return new InstanceLoad(slot.Index, samples, slot.StepTime.Current(slot.Instance.Stats.MeanEmittedPerSampleStep));
    }

    /// <summary>What moving <paramref name="s"/> off <paramref name="donor"/> costs: nothing for a waiting sample (its prefill is due anyway).</summary>
    private double MoveSeconds(Slot donor, SampleState s)
    {
        if (!s.InCache) return 0;
        return MoveCost.Seconds(Options.Migration, CopySeconds(donor, s), RecomputeSeconds(donor, s));
    }

    private double CopySeconds(Slot donor, SampleState s)
    {
        if (donor.Instance.Model is not IMigratableModel migratable) return double.PositiveInfinity;
        double rate = _copySecondsMeasured > 0 ? _copyBytesMeasured / _copySecondsMeasured : Options.AssumedCopyBytesPerSecond;
        return MoveCost.CopySeconds(migratable.KvBytes(s.SampleId), rate);
    }

    private double RecomputeSeconds(Slot donor, SampleState s)
    {
        var stats = donor.Instance.Stats;
        double rate = stats.PrefillSeconds > 0 && stats.PrefillTokens > 0 ? stats.PrefillTokens / stats.PrefillSeconds : Options.AssumedPrefillTokensPerSecond;
        return MoveCost.RecomputeSeconds(s.Tokens.Count, rate);
    }

    private void Move(Slot donor, Slot receiver, long sampleId)
    {
        var s = donor.Instance.LiveSamples.FirstOrDefault(x => x.SampleId == sampleId);
        if (s is not null && s.InCache && receiver.Instance.LiveCount < receiver.Instance.MaxBatch && WantCopy(donor, s))
        {
            if (donor.Instance.BeginMoveWithKv(sampleId, receiver.Instance) is { } pending)
            {
                receiver.Incoming.Add(new Incoming(pending, donor, donor.Steps));
                return;
            }
            long bytes = ((IMigratableModel)donor.Instance.Model).KvBytes(sampleId);
            var clock = Stopwatch.StartNew();
            if (donor.Instance.TryMoveWithKv(sampleId, receiver.Instance))
            {
                CountCopy(bytes, clock.Elapsed.TotalSeconds);
                return;
            }
        }
        var taken = donor.Instance.TakeOut(sampleId);
        if (taken.Generated > 0) _recomputes++;
        else _reassigned++;
        receiver.Instance.Inject(taken);
    }

    private bool WantCopy(Slot donor, SampleState s) => MoveCost.PrefersCopy(Options.Migration, CopySeconds(donor, s), RecomputeSeconds(donor, s));

    /// <summary>Disposes the instances (not their models: the factory's caller owns those).</summary>
    public void Dispose()
    {
        foreach (var s in _slots) s.Instance.Dispose();
    }
}
