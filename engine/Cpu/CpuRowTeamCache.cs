namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// The <see cref="CpuRowTeam"/>s of one row-kernel call, kept by the backend from call to call: a verify of 152k-entry
/// rows has 1.8 MB of scratch per team, and fresh scratch costs an allocation and a page fault per 4 KiB on its first
/// write each call (a quarter of a batch-1 sampled verify). Teams are made on first use; a cache serves any call
/// whose rows and scratch rows fit in it.
/// </summary>
internal sealed class CpuRowTeamCache : IDisposable
{
    private readonly CpuRowTeam?[] _solo;
    private CpuRowTeam? _wide;

    /// <param name="participants">Participants of the backend's worker pool.</param>
    public CpuRowTeamCache(int participants, int rowLength, int scratchRows)
    {
        _solo = new CpuRowTeam?[participants];
        RowLength = rowLength;
        ScratchRows = scratchRows;
    }

    public int RowLength { get; }
    public int ScratchRows { get; }
    public int Participants => _solo.Length;

    /// <summary>Whether calls on rows of <paramref name="rowLength"/> with <paramref name="scratchRows"/> scratch rows can use these teams.</summary>
    public bool Fits(int rowLength, int scratchRows) => rowLength <= RowLength && scratchRows <= ScratchRows;

    /// <summary>The team of one of participant <paramref name="index"/> (index 0 also serves calls run on the caller alone).</summary>
    public CpuRowTeam Solo(int index) => _solo[index] ??= new CpuRowTeam(1, null, RowLength, ScratchRows);

    /// <summary>The team of every participant of <paramref name="pool"/> (the backend's, always the same), which splits each row.</summary>
    public CpuRowTeam Wide(CpuWorkers pool) => _wide ??= new CpuRowTeam(pool.Count, pool.Count > 1 ? pool : null, RowLength, ScratchRows);

    public void Dispose()
    {
        _wide?.Dispose();
        foreach (var team in _solo) team?.Dispose();
    }
}
