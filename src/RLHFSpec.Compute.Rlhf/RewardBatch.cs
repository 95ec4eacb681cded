namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Whole sequences (prompt + response, as a reward model reads them) right-padded to the longest: input ids,
/// positions, attention mask and a one-hot <see cref="LastToken"/> at each row's last real token, where a reward
/// model's score is read. Unlike <see cref="SequenceBatch"/> the last token is an input, not only a target.
/// </summary>
public sealed class RewardBatch
{
    private RewardBatch(int batch, int length)
    {
        Batch = batch;
        Length = length;
        InputIds = new long[batch * length];
        Positions = new long[batch * length];
        AttentionMask = new float[batch * length];
        LastToken = new float[batch * length];
    }

    public int Batch { get; }
    public int Length { get; }
    public long[] InputIds { get; }        // [B, T]
    public long[] Positions { get; }       // [B, T]
    public float[] AttentionMask { get; }  // [B, T], 1 = real token
    public float[] LastToken { get; }      // [B, T], 1 at each row's last real token

    public static RewardBatch From(IReadOnlyList<int[]> sequences, int pad = 0)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count == 0) throw new ArgumentException("a batch needs at least one sequence", nameof(sequences));
        int length = 0;
        for (int i = 0; i < sequences.Count; i++)
        {
            if (sequences[i].Length == 0) throw new ArgumentException($"sequence {i}: empty", nameof(sequences));
            length = Math.Max(length, sequences[i].Length);
        }
        var b = new RewardBatch(sequences.Count, length);
        for (int i = 0; i < sequences.Count; i++)
        {
            var s = sequences[i];
            for (int t = 0; t < length; t++)
            {
                int at = i * length + t;
                bool real = t < s.Length;
                b.InputIds[at] = real ? s[t] : pad;
                b.Positions[at] = real ? t : 0;
                b.AttentionMask[at] = real ? 1 : 0;
            }
            b.LastToken[i * length + s.Length - 1] = 1;
        }
        return b;
    }
}
