namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>
/// One generation instance of a <see cref="GenerationCluster"/> with what its worker thread and the cluster keep
/// about it: its state, the samples and moves queued for it while it stepped, the KV it still holds for samples
/// moved out, its step-time fit and this run's accounting. Fields are read and written under the cluster's lock,
/// except by the worker's own thread while it steps.
/// </summary>
internal sealed class InstanceWorker(int index, GenerationInstance instance)
{
    public int Index { get; } = index;
    public GenerationInstance Instance { get; } = instance;
    public InstanceWorkerState State;
    public readonly List<SampleState> Inbox = new();       // given to it while it stepped (failure re-admissions)
    public readonly List<IncomingMove> Incoming = new();   // overlapped moves to copy in before its next step
    public readonly List<long> ToRelease = new();          // samples moved out whose copy has ended: free their KV here
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

    /// <summary>Every sample it holds or is about to: live, waiting, queued in its inbox, being copied in.</summary>
    public IEnumerable<SampleState> AllSamples =>
        Instance.LiveSamples.Concat(Instance.WaitingSamples).Concat(Inbox).Concat(Incoming.Select(m => m.Move.Sample));

    /// <summary>Hands the samples queued for it (while it stepped) to its instance; call only while it is not stepping.</summary>
    public void TakeInbox()
    {
        foreach (var s in Inbox) Instance.Inject(s);
        Inbox.Clear();
    }

    /// <summary>Frees what it still holds for samples copied out of it; call only while it is not stepping.</summary>
    public void ReleaseMoved()
    {
        foreach (long id in ToRelease) Instance.ReleaseMoved(id);
        ToRelease.Clear();
    }
}
