namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Prompt + response sequences as the training graphs take them: right-padded [B, T] inputs (the sequence without
/// its last token), targets (the sequence shifted by one), positions, attention mask, and a loss mask that is 1
/// exactly where the target is a response token. T = the longest sequence − 1, so minibatches bucketed by length
/// waste little on padding.
/// </summary>
public sealed class SequenceBatch
{
    private SequenceBatch(int batch, int length)
    {
        Batch = batch;
        Length = length;
        InputIds = new long[batch * length];
        Targets = new long[batch * length];
        Positions = new long[batch * length];
        AttentionMask = new float[batch * length];
        LossMask = new float[batch * length];
        ResponseStart = new int[batch];
        ResponseLength = new int[batch];
    }

    public int Batch { get; }
    public int Length { get; }
    public long[] InputIds { get; }
    public long[] Targets { get; }
    public long[] Positions { get; }
    public float[] AttentionMask { get; }
    public float[] LossMask { get; }

    /// <summary>Per row: index t whose target is the first response token (prompt length − 1).</summary>
    public int[] ResponseStart { get; }

    /// <summary>Per row: response tokens (the loss-masked targets).</summary>
    public int[] ResponseLength { get; }

    public static SequenceBatch From(IReadOnlyList<(int[] Prompt, int[] Response)> rows, int pad = 0)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new ArgumentException("a batch needs at least one sequence", nameof(rows));
        int length = 1;
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Prompt.Length == 0) throw new ArgumentException($"sequence {i}: empty prompt", nameof(rows));
            length = Math.Max(length, rows[i].Prompt.Length + rows[i].Response.Length - 1);
        }
        var b = new SequenceBatch(rows.Count, length);
        for (int i = 0; i < rows.Count; i++)
        {
            var (prompt, response) = rows[i];
            int n = prompt.Length + response.Length;
            int Token(int t) => t < prompt.Length ? prompt[t] : response[t - prompt.Length];
            for (int t = 0; t < length; t++)
            {
                int at = i * length + t;
                bool real = t < n - 1;
                b.InputIds[at] = real ? Token(t) : pad;
                b.Targets[at] = real ? Token(t + 1) : pad;
                b.Positions[at] = real ? t : 0;
                b.AttentionMask[at] = real ? 1 : 0;
                b.LossMask[at] = real && t + 1 >= prompt.Length ? 1 : 0;
            }
            b.ResponseStart[i] = prompt.Length - 1;
            b.ResponseLength[i] = response.Length;
        }
        return b;
    }

    /// <summary>Per-token values [B, T] from per-row response values (row i's k-th response token at t = start + k); 0 elsewhere.</summary>
    public float[] Scatter(IReadOnlyList<float[]> perRow)
    {
        var dense = new float[Batch * Length];
        for (int i = 0; i < Batch; i++)
            for (int k = 0; k < ResponseLength[i]; k++) dense[i * Length + ResponseStart[i] + k] = perRow[i][k];
        return dense;
    }

    /// <summary>Row i's response values out of a [B, T] tensor.</summary>
    public float[] Gather(ReadOnlySpan<float> dense, int row) => dense.Slice(row * Length + ResponseStart[row], ResponseLength[row]).ToArray();
}
