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
/// Each instance is an <see cref="InstanceWorker"/> on its own thread; the migrations (reallocation plans, KV copies,
/// releases on the donor, their counts) are the <see cref="MigrationCoordinator"/>'s.
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
    private readonly object _gate = new();
    private readonly InstanceWorker[] _workers;
    private readonly MigrationCoordinator _migration;

    // The current run.
    private readonly List<SampleResult> _results = new();
    private readonly HashSet<long> _finishedIds = new();
    private int _expected;
    private bool _done, _running;
    private Exception? _fatal;
    private Stopwatch _clock = new();
    private long _readmissions;

    /// <param name="instances">Instances to create.</param>
    /// <param name="factory">Creates instance k (its own model, proposers and options); the caller owns the models.</param>
    public GenerationCluster(int instances, Func<int, GenerationInstance> factory, ClusterOptions? options = null, LengthPredictor? predictor = null)
    {
        if (instances < 1) throw new ArgumentOutOfRangeException(nameof(instances), instances, "must be >= 1");
        ArgumentNullException.ThrowIfNull(factory);
        Options = options ?? new ClusterOptions();
        Options.Validate();
        Predictor = predictor ?? new LengthPredictor();
        _workers = new InstanceWorker[instances];
        try
        {
            for (int k = 0; k < instances; k++) _workers[k] = new InstanceWorker(k, factory(k) ?? throw new InvalidOperationException($"the factory returned no instance {k}"));
        }
        catch
        {
            foreach (var s in _workers) s?.Instance.Dispose();
            throw;
        }
        _migration = new MigrationCoordinator(_workers, Options, Predictor);
    }

    public ClusterOptions Options { get; }

    /// <summary>Learns response lengths per prompt from every run; drives the initial assignment and the reallocator.</summary>
    public LengthPredictor Predictor { get; }

    public int InstanceCount => _workers.Length;

    /// <summary>Instance <paramref name="k"/> (inspect it only while no run is in progress).</summary>
    public GenerationInstance Instance(int k) => _workers[k].Instance;

    /// <summary>Whether instance <paramref name="k"/> has failed or been stopped (it takes no more work).</summary>
    public bool IsOut(int k)
    {
        lock (_gate) return _workers[k].State == InstanceWorkerState.Failed;
    }

    /// <summary>Stops instance <paramref name="k"/> at its next step boundary; its samples go to the others.</summary>
    public void StopInstance(int k)
    {
        lock (_gate)
        {
            _workers[k].StopRequested = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Generates every request (distinct sample ids) and returns each result exactly once, in order of completion.
    /// Throws when every instance has failed with samples left, naming the failures.
    /// </summary>
    public ClusterRunResult Run(IReadOnlyList<GenerationRequest> requests)
    {
        ArgumentNullException.ThrowIfNull(requests);
        if (requests.Select(r => r.SampleId).Distinct().Count() != requests.Count) throw new ArgumentException("requests: sample ids must be distinct", nameof(requests));
        var alive = Start(requests);
        try
        {
            var threads = alive.Select(s => new Thread(() => RunWorker(s)) { IsBackground = true, Name = $"generation instance {s.Index}" }).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
        }
        finally
        {
            lock (_gate)
            {
                _running = false;
                // No worker runs now: free what donors still hold for samples copied out after their last step.
                foreach (var s in _workers)
                    if (s.State != InstanceWorkerState.Failed) s.ReleaseMoved();
            }
        }
        double wall = _clock.Elapsed.TotalSeconds;
        if (_fatal is not null) throw new InvalidOperationException($"the cluster failed: {_fatal.Message}", _fatal);
        if (_results.Count != _expected)
            throw new InvalidOperationException($"{_expected - _results.Count} of {_expected} samples did not finish: every instance failed ({string.Join("; ", _workers.Where(s => s.Failure is not null).Select(s => $"{s.Index}: {s.Failure}"))})");
        foreach (var r in _results) Predictor.Observe(r.Request.Prompt, r.Tokens.Length);
        return new ClusterRunResult(_results.ToArray(), Stats(wall));
    }

    /// <summary>Starts a run under the lock: resets this run's accounting, assigns and enqueues the requests; returns the workers to start.</summary>
    private InstanceWorker[] Start(IReadOnlyList<GenerationRequest> requests)
    {
        InstanceWorker[] alive;
        lock (_gate)
        {
            if (_running) throw new InvalidOperationException("the cluster is already running");
            alive = _workers.Where(s => s.State != InstanceWorkerState.Failed).ToArray();
            if (alive.Length == 0) throw new InvalidOperationException($"every instance is out: {string.Join("; ", _workers.Select(s => $"{s.Index}: {s.Failure}"))}");
            foreach (var s in _workers)
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
            _readmissions = 0;
            _migration.StartRun();
            _running = true;
            _clock = Stopwatch.StartNew();
        }
        return alive;
    }

    /// <summary>The finished run's statistics: migrations, per-instance busy and idle time, and the instances' totals.</summary>
    private ClusterStats Stats(double wall)
    {
        var total = new GenerationStats();
        foreach (var s in _workers) total.Add(s.Instance.Stats);
        return new ClusterStats
        {
            WallSeconds = wall,
            Migrations = _migration.Migrations,
            OverlappedMigrations = _migration.Overlapped,
            KvBytesMoved = _migration.BytesMoved,
            CopySeconds = _migration.CopySeconds,
            Recomputes = _migration.Recomputes,
            Reassigned = _migration.Reassigned,
            FailureReadmissions = _readmissions,
            Instances = _workers.Select(s => new InstanceRunStats(s.Index, s.Busy, Math.Max(0, wall - s.Busy), s.LastFinish, s.RunSteps, s.RunFinished, s.Failure)).ToArray(),
            Total = total,
        };
    }

    private InstanceWorker[] Assign(IReadOnlyList<GenerationRequest> requests, InstanceWorker[] alive)
    {
        var assignment = new InstanceWorker[requests.Count];
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
    private void RunWorker(InstanceWorker worker)
    {
        var copied = new List<(IncomingMove Move, bool Copied, double Seconds)>();
        try
        {
            while (WaitForWork(worker) is { } incoming)
            {
                copied.Clear();
                var fault = _migration.CopyIn(worker, incoming, copied);
                var clock = Stopwatch.StartNew();
                if (fault is null)
                    try
                    {
                        Options.BeforeStep?.Invoke(worker.Index, worker.Steps);
                        worker.Instance.Step();
                    }
                    catch (Exception e) { fault = e; }
                if (!EndStep(worker, clock.Elapsed.TotalSeconds, incoming, copied, fault)) return;
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
    /// Blocks until the worker has samples (or moves to copy in) and marks it stepping; returns the moves it takes over,
    /// or null when the run is done or the worker was asked to stop.
    /// </summary>
    private List<IncomingMove>? WaitForWork(InstanceWorker worker)
    {
        lock (_gate)
        {
            while (true)
            {
                if (_done) return null;
                if (worker.StopRequested)
                {
                    Fail(worker, "stopped");
                    Finish();
                    return null;
                }
                worker.ReleaseMoved(); // before TakeInbox: a sample may come back while its old KV is still held here
                worker.TakeInbox();
                if (worker.Instance.LiveCount + worker.Instance.WaitingCount + worker.Incoming.Count > 0) break;
                if (!worker.Idle)
                {
                    worker.Idle = true;
                    Options.OnIdle?.Invoke(worker.Index);
                }
                Monitor.Wait(_gate);
            }
            worker.State = InstanceWorkerState.Stepping;
            worker.Idle = false;
            var incoming = worker.Incoming.ToList();
            worker.Incoming.Clear();
            return incoming;
        }
    }

    /// <summary>Accounts a step (or its fault) under the lock; false when the worker failed and its thread ends.</summary>
    private bool EndStep(InstanceWorker worker, double seconds, List<IncomingMove> incoming, List<(IncomingMove Move, bool Copied, double Seconds)> copied, Exception? fault)
    {
        lock (_gate)
        {
            worker.State = InstanceWorkerState.Ready;
            worker.Steps++;
            worker.RunSteps++;
            worker.Busy += seconds + copied.Sum(c => c.Seconds);
            foreach (var (m, ok, copySeconds) in copied) _migration.EndMove(m, ok, copySeconds);
            if (fault is not null)
            {
                // Moves not copied in yet go back to the list: Fail re-admits their samples elsewhere.
                worker.Incoming.InsertRange(0, incoming.Where(m => !copied.Any(c => c.Move == m)));
                Fail(worker, $"{fault.GetType().Name}: {fault.Message}");
            }
            else
            {
                Collect(worker);
                Measure(worker, seconds);
                worker.ReleaseMoved();
                worker.TakeInbox(); // the donor moves only samples its instance holds
                if (Options.Reallocate) _migration.Rebalance(worker);
                worker.CachedWork = PredictedWork(worker);
            }
            Finish();
            return fault is null;
        }
    }

    /// <summary>Ends the run when every sample is in, or when no instance is left to finish the rest; wakes the workers.</summary>
    private void Finish()
    {
        if (_results.Count == _expected || _workers.All(s => s.State == InstanceWorkerState.Failed)) _done = true;
        Monitor.PulseAll(_gate);
    }

    private void Collect(InstanceWorker worker)
    {
        var finished = worker.Instance.Finished;
        for (; worker.FinishedSeen < finished.Count; worker.FinishedSeen++) AddResult(worker, finished[worker.FinishedSeen]);
    }

    private void AddResult(InstanceWorker worker, SampleResult result)
    {
        if (!_finishedIds.Add(result.Request.SampleId)) throw new InvalidOperationException($"sample {result.Request.SampleId} finished twice");
        _results.Add(result);
        worker.LastFinish = _clock.Elapsed.TotalSeconds;
        worker.RunFinished++;
    }

    private void Measure(InstanceWorker worker, double seconds)
    {
        var stats = worker.Instance.Stats;
        if (stats.Steps == worker.StepsSeen) return; // nothing decoded (all finished at admission)
        worker.StepsSeen = stats.Steps;
        worker.StepTime.Observe(stats.LastBatch, seconds);
    }

    /// <summary>Takes a failed or stopped instance out and re-admits its samples on the others (least predicted work first).</summary>
    private void Fail(InstanceWorker worker, string reason)
    {
        worker.State = InstanceWorkerState.Failed;
        worker.Failure = reason;
        Collect(worker);
        var orphans = worker.Instance.Abandon().Concat(worker.Inbox).Concat(worker.Incoming.Select(m => m.Move.Sample)).ToList();
        foreach (var m in worker.Incoming) MigrationCoordinator.QueueRelease(m.From, m.Move.Sample.SampleId); // their donors still hold the KV
        worker.Inbox.Clear();
        worker.Incoming.Clear();
        worker.ToRelease.Clear();
        worker.CachedWork = 0;
        foreach (var s in orphans.OrderBy(s => s.SampleId))
        {
            if (s.Finished is not null)
            {
                if (!_finishedIds.Contains(s.SampleId)) AddResult(worker, s.ToResult());
                continue;
            }
            var target = _workers.Where(x => x.State != InstanceWorkerState.Failed).MinBy(x => (Work(x), x.Index));
            if (target is null) return; // nobody left: the run reports the missing samples
            target.Inbox.Add(s);
            target.CachedWork += Predictor.PredictRemaining(s.Request, s.Generated);
            _readmissions++;
        }
    }

    /// <summary>Predicted work of an instance: counted now when it is not stepping, else as of its last boundary.</summary>
    private double Work(InstanceWorker worker) => worker.State == InstanceWorkerState.Stepping ? worker.CachedWork : PredictedWork(worker);

    private double PredictedWork(InstanceWorker worker) => worker.AllSamples.Sum(s => Predictor.PredictRemaining(s.Request, s.Generated));

    /// <summary>Disposes the instances (not their models: the factory's caller owns those).</summary>
    public void Dispose()
    {
        foreach (var s in _workers) s.Instance.Dispose();
    }
}
