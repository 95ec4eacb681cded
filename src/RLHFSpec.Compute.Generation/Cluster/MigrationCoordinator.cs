using System.Diagnostics;
using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// The cluster's migrations: at a donor's step boundary it asks the <see cref="Reallocator"/> for moves and carries
/// them out — a live sample's KV copied (overlapped with the donor's steps where the models allow it, else between
/// steps) or recomputed on the receiver, whichever <see cref="MoveCost"/> says is cheaper with the measured copy and
/// prefill rates; a waiting sample is simply reassigned. It also runs the receiver's half of overlapped moves and
/// frees the donor's KV once a copy has ended, and counts what moved. Every member but <see cref="CopyIn"/> is
/// called under the cluster's lock.
/// </summary>
internal sealed class MigrationCoordinator(InstanceWorker[] workers, ClusterOptions options, LengthPredictor predictor)
{
    private readonly Reallocator _reallocator = new(options.DrainThreshold, options.RequireGain);
    private long _copyBytesMeasured;
    private double _copySecondsMeasured;

    // This run.
    public long Migrations, Overlapped, BytesMoved, Recomputes, Reassigned;
    public double CopySeconds;

    /// <summary>Starts a run's counts (the measured copy rate carries over).</summary>
    public void StartRun()
    {
        Migrations = Overlapped = BytesMoved = Recomputes = Reassigned = 0;
        CopySeconds = 0;
    }

    /// <summary>Moves samples off <paramref name="donor"/> (not stepping) to ready receivers as the reallocator plans.</summary>
    public void Rebalance(InstanceWorker donor)
    {
        var receivers = workers.Where(s => s != donor && s.State == InstanceWorkerState.Ready).ToArray();
        if (receivers.Length == 0 || donor.Instance.LiveCount + donor.Instance.WaitingCount < 2) return;
        var plans = _reallocator.Plan(Load(donor, donor), receivers.Select(r => Load(r, donor)).ToArray());
        foreach (var plan in plans)
        {
            var receiver = workers[plan.To];
            foreach (long id in plan.SampleIds) Move(donor, receiver, id);
        }
    }

    /// <summary>
    /// The receiver's half of overlapped moves, on its own thread without the lock (donors go on stepping): copies
    /// in what was handed over, recording each copy's outcome and seconds; returns the fault that stopped it, if any.
    /// </summary>
    public Exception? CopyIn(InstanceWorker receiver, List<IncomingMove> incoming, List<(IncomingMove Move, bool Copied, double Seconds)> copied)
    {
        try
        {
            foreach (var m in incoming)
            {
                options.BeforeMigrationCopy?.Invoke(receiver.Index, m.Move.Sample.SampleId);
                var copy = Stopwatch.StartNew();
                bool ok = receiver.Instance.CompleteMoveWithKv(m.Move);
                copied.Add((m, ok, copy.Elapsed.TotalSeconds));
            }
            return null;
        }
        catch (Exception e) { return e; }
    }

    /// <summary>Accounts an overlapped move whose copy has ended (or fell back to recompute) and lets its donor free the KV.</summary>
    public void EndMove(IncomingMove m, bool copied, double seconds)
    {
        if (copied)
        {
            CountCopy(m.Move.Snapshot.Bytes, seconds);
            if (m.From.Steps > m.FromSteps || m.From.State == InstanceWorkerState.Stepping) Overlapped++;
        }
        else Recomputes++;
        QueueRelease(m.From, m.Move.Sample.SampleId);
    }

    /// <summary>Frees a moved-out sample's KV on its donor: now if the donor is not stepping, else at its next boundary.</summary>
    public static void QueueRelease(InstanceWorker from, long sampleId)
    {
        if (from.State == InstanceWorkerState.Failed) return; // its model's state is unknown; nothing runs on it any more
        from.ToRelease.Add(sampleId);
        if (from.State != InstanceWorkerState.Stepping) from.ReleaseMoved();
    }

    /// <summary>Counts a migration by KV copy; its bytes and seconds also refine the measured copy rate.</summary>
    private void CountCopy(long bytes, double seconds)
    {
        Migrations++;
        BytesMoved += bytes;
        CopySeconds += seconds;
        _copyBytesMeasured += bytes;
        _copySecondsMeasured += seconds;
    }

    private InstanceLoad Load(InstanceWorker worker, InstanceWorker donor)
    {
        var samples = worker.AllSamples
            .Select(s => new SampleLoad(s.SampleId, predictor.PredictRemaining(s.Request, s.Generated), worker == donor ? MoveSeconds(donor, s) : 0))
            .ToArray();
        return new InstanceLoad(worker.Index, samples, worker.StepTime.Current(worker.Instance.Stats.MeanEmittedPerSampleStep));
    }

    /// <summary>What moving <paramref name="s"/> off <paramref name="donor"/> costs: nothing for a waiting sample (its prefill is due anyway).</summary>
    private double MoveSeconds(InstanceWorker donor, SampleState s)
    {
        if (!s.InCache) return 0;
        return MoveCost.Seconds(options.Migration, CopySecondsOf(donor, s), RecomputeSecondsOf(donor, s));
    }

    private double CopySecondsOf(InstanceWorker donor, SampleState s)
    {
        if (donor.Instance.Model is not IMigratableModel migratable) return double.PositiveInfinity;
        double rate = _copySecondsMeasured > 0 ? _copyBytesMeasured / _copySecondsMeasured : options.AssumedCopyBytesPerSecond;
        return MoveCost.CopySeconds(migratable.KvBytes(s.SampleId), rate);
    }

    private double RecomputeSecondsOf(InstanceWorker donor, SampleState s)
    {
        var stats = donor.Instance.Stats;
        double rate = stats.PrefillSeconds > 0 && stats.PrefillTokens > 0 ? stats.PrefillTokens / stats.PrefillSeconds : options.AssumedPrefillTokensPerSecond;
        return MoveCost.RecomputeSeconds(s.Tokens.Count, rate);
    }

    /// <summary>One planned move: overlapped KV copy, else a KV copy between steps, else recompute (or reassignment of a waiting sample).</summary>
    private void Move(InstanceWorker donor, InstanceWorker receiver, long sampleId)
    {
        var s = donor.Instance.LiveSamples.FirstOrDefault(x => x.SampleId == sampleId);
        if (s is not null && s.InCache && receiver.Instance.LiveCount < receiver.Instance.MaxBatch && WantCopy(donor, s))
        {
            if (donor.Instance.BeginMoveWithKv(sampleId, receiver.Instance) is { } pending)
            {
                receiver.Incoming.Add(new IncomingMove(pending, donor, donor.Steps));
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
        if (taken.Generated > 0) Recomputes++;
        else Reassigned++;
        receiver.Instance.Inject(taken);
    }

    private bool WantCopy(InstanceWorker donor, SampleState s) =>
        MoveCost.PrefersCopy(options.Migration, CopySecondsOf(donor, s), RecomputeSecondsOf(donor, s));
}
