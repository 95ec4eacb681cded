namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// A <see cref="CpuWorkers"/> region over items (rows or samples): either one <see cref="CpuRowTeam"/> of all the
/// participants, which takes the items in order and splits each row, or a team of one per participant, which take
/// items in turn from a shared counter.
/// </summary>
internal sealed class CpuRowWork : IParallelWork, IDisposable
{
    /// <summary>Processes item <paramref name="item"/> as <paramref name="member"/> of its team; must not throw.</summary>
    public delegate void Body(ref CpuRowTeam.Member member, int item);

    private readonly int _count;
    private readonly Body _body;
    private readonly CpuRowTeam[] _teams;
    private readonly bool _splitRows;
    private int _next;

    public CpuRowWork(CpuWorkers pool, int count, int rowLength, int scratchRows, bool splitRows, Body body)
    {
        _count = count;
        _body = body;
        _splitRows = splitRows;
        _teams = splitRows
            ? [new CpuRowTeam(pool.Count, pool, rowLength, scratchRows)]
            : Enumerable.Range(0, pool.Count).Select(_ => new CpuRowTeam(1, null, rowLength, scratchRows)).ToArray();
    }

    public void Execute(int index, int count)
    {
        if (_splitRows)
        {
            var member = _teams[0][index];
            for (int i = 0; i < _count; i++) _body(ref member, i);
            return;
        }
        var solo = _teams[index][0];
        for (int i = Interlocked.Increment(ref _next) - 1; i < _count; i = Interlocked.Increment(ref _next) - 1)
            _body(ref solo, i);
    }

    public void Dispose()
    {
        foreach (var team in _teams) team.Dispose();
    }
}
