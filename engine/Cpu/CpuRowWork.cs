namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// A <see cref="CpuWorkers"/> region over items (rows or samples): either one <see cref="CpuRowTeam"/> of all the
/// participants, which takes the items in order and splits each row, or a team of one per participant, which take
/// items in turn from a shared counter. The teams belong to a <see cref="CpuRowTeamCache"/>, which outlives the region.
/// </summary>
internal sealed class CpuRowWork : IParallelWork
{
    /// <summary>Processes item <paramref name="item"/> as <paramref name="member"/> of its team; must not throw.</summary>
    public delegate void Body(ref CpuRowTeam.Member member, int item);

    private readonly int _count;
    private readonly Body _body;
    private readonly CpuRowTeamCache _teams;
    private readonly CpuRowTeam? _wide;
    private readonly bool _splitRows;
    private int _next;

    public CpuRowWork(CpuWorkers pool, CpuRowTeamCache teams, int count, bool splitRows, Body body)
    {
        _count = count;
        _body = body;
        _splitRows = splitRows;
        _teams = teams;
        // Made here, before the region: participants must not race to create the team they share.
        if (splitRows) _wide = teams.Wide(pool);
        else
            for (int i = 0; i < teams.Participants; i++) teams.Solo(i);
    }

    public void Execute(int index, int count)
    {
        if (_splitRows)
        {
            var member = _wide![index];
            for (int i = 0; i < _count; i++) _body(ref member, i);
            return;
        }
        var solo = _teams.Solo(index)[0];
        for (int i = Interlocked.Increment(ref _next) - 1; i < _count; i = Interlocked.Increment(ref _next) - 1)
            _body(ref solo, i);
    }
}
