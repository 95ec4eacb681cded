namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>Work that a <see cref="CpuWorkers"/> pool runs on every participant at once.</summary>
public interface IParallelWork
{
    /// <summary>Participant <paramref name="index"/> of <paramref name="count"/> (0 is the calling thread) does its share.</summary>
    void Execute(int index, int count);
}

/// <summary>
/// A fixed set of worker threads for the short, fine-grained parallel regions of a decode step (a layer's
/// matrix-vector products at batch 1 take tens of microseconds). The caller takes part as participant 0;
/// waking the workers and the <see cref="Barrier"/> between ops cost about a microsecond each because
/// participants spin for a while before they block, where <c>Parallel.For</c> pays 5–20 µs per call.
/// Workers block on an event after <see cref="SpinIterations"/> idle spins, so an idle pool costs nothing and a
/// loaded machine is not starved by spinning. One region runs at a time: callers on other threads (the
/// instances of a generation cluster sharing one backend) wait their turn; a region may not start another.
/// </summary>
public sealed class CpuWorkers : IDisposable
{
    /// <summary>
    /// Idle spins (SpinWait.SpinOnce without sleeping, each a pause or a yield) before a worker blocks: long enough to
    /// bridge the gap between two regions of one step (an attention call, the step loop's bookkeeping; tens to a few
    /// hundred microseconds), short enough that a pool between steps of a slow caller goes to sleep.
    /// </summary>
    private const int SpinIterations = 4000;

    private readonly Thread[] _threads;
    private readonly ManualResetEventSlim _wake = new(false);
    private readonly object _turn = new();
    private IParallelWork? _work;
    private long _generation;          // bumped per region; workers run each generation once
    private int _pending;              // workers still inside the current region
    private volatile bool _disposed;
    private Exception? _failure;
    [ThreadStatic] private static bool _inRegion;   // a worker thread inside Execute (the caller is known by the lock it holds)

    // Sense-reversing barrier over all participants.
    private int _barrierCount;
    private volatile int _barrierSense;

    /// <param name="threads">Participants including the caller (≥ 1); 1 runs every region on the caller.</param>
    public CpuWorkers(int threads)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), threads, "must be >= 1");
        Count = threads;
        _threads = new Thread[threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int index = i + 1;
            _threads[i] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"rlhfspec-dense-{index}" };
            _threads[i].Start();
        }
    }

    /// <summary>Participants of every region, the caller included.</summary>
    public int Count { get; }

    /// <summary>Runs <paramref name="work"/> on every participant and returns when all are done; rethrows the first failure.</summary>
    public void Run(IParallelWork work)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Monitor.IsEntered(_turn) || _inRegion)
            throw new InvalidOperationException("a parallel region may not start another region of the same pool");
        lock (_turn)
        {
            if (Count == 1)
            {
                work.Execute(0, 1);
                return;
            }
            _work = work;
            _failure = null;
            Volatile.Write(ref _pending, Count - 1);
            Interlocked.Increment(ref _generation);
            _wake.Set();
            try { work.Execute(0, Count); }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            var spin = new SpinWait();
            while (Volatile.Read(ref _pending) != 0) spin.SpinOnce(-1);
            _wake.Reset();
            _work = null;
            if (_failure is { } failure) throw new AggregateException("a parallel region failed", failure);
        }
    }

    /// <summary>
    /// Waits until every participant of the current region reached it. Call it from <see cref="IParallelWork.Execute"/>
    /// the same number of times on every participant (a failing participant must still reach every barrier).
    /// </summary>
    public void Barrier()
    {
        if (Count == 1) return;
        int sense = _barrierSense;
        if (Interlocked.Increment(ref _barrierCount) == Count)
        {
            _barrierCount = 0;
            _barrierSense = sense ^ 1;
            return;
        }
        var spin = new SpinWait();
        while (_barrierSense == sense) spin.SpinOnce(-1);
    }

    private void Loop(int index)
    {
        long seen = 0;
        while (true)
        {
            var spin = new SpinWait();
            int idle = 0;
            while (Volatile.Read(ref _generation) == seen && !_disposed)
            {
                if (++idle < SpinIterations) spin.SpinOnce(-1);
                else
                {
                    _wake.Wait();
                    idle = 0;
                }
            }
            if (_disposed) return;
            seen = Volatile.Read(ref _generation);
            var work = _work!;
            _inRegion = true;
            try { work.Execute(index, Count); }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            finally { _inRegion = false; }
            Interlocked.Decrement(ref _pending);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _wake.Set();
        foreach (var t in _threads) t.Join();
        _wake.Dispose();
    }
}
