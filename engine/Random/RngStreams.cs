namespace RLHFSpec.Compute.Engine.Random;

/// <summary>
/// The third Philox counter word: which use a draw serves. Streams never overlap, so a verification's
/// accept draws are independent of the draft's own sampling and of the target's token race.
/// </summary>
public static class RngStreams
{
    /// <summary>The target's token race at a position (index = vocabulary id). Plain decoding uses it too,
    /// so an empty draft emits exactly the token plain sampling would.</summary>
    public const uint Target = 0;

    /// <summary>Accept/reject uniforms of verification (index = the child attempt at that node, 0-based).</summary>
    public const uint Accept = 1;

    /// <summary>First stream for proposers' own sampling (draft model: Draft + branch).</summary>
    public const uint Draft = 16;
}
