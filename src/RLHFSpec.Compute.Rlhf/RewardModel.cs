using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// A reward model: a scalar-head <see cref="ValueModel"/> with its tokenizer. The score of a response is the value
/// at the last token of prompt ids + response ids (trailing stop tokens removed). The RLHF loop scores a rollout's
/// decoded text, re-encoded, so the model reads the same tokenization it was trained on by train-rm. Scoring is batched: sequences sorted by length and
/// scored in chunks, so ragged inputs waste little on padding.
/// </summary>
public sealed class RewardModel : IDisposable
{
    private readonly HashSet<int> _stops;

    public RewardModel(ValueModel model, TextTokenizer tokenizer, IEnumerable<int> stopTokens)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        Tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _stops = new HashSet<int>(stopTokens);
    }

    public ValueModel Model { get; }
    public TextTokenizer Tokenizer { get; }

    /// <summary>Loads a reward model checkpoint (scalar-head, num_labels 1); a causal LM is refused: its head would score everything 0.</summary>
    public static RewardModel Load(Checkpoint checkpoint, OnnxSessionOptions options)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (!checkpoint.Config.IsSequenceClassifier)
            throw new InvalidDataException($"reward model '{checkpoint.Folder}': config.json describes a causal LM, not a scalar-head model (train one with 'rlhfspec train-rm')");
        return new RewardModel(ValueModel.Load(checkpoint, options), checkpoint.Tokenizer, checkpoint.StopTokenIds());
    }

    /// <summary>The ids the model scores: prompt, then response without its trailing stop tokens.</summary>
    public int[] Sequence(ReadOnlySpan<int> prompt, ReadOnlySpan<int> response)
    {
        int n = response.Length;
        while (n > 0 && _stops.Contains(response[n - 1])) n--;
        var ids = new int[prompt.Length + n];
        prompt.CopyTo(ids);
        response[..n].CopyTo(ids.AsSpan(prompt.Length));
        return ids;
    }

    public int[] Sequence(string prompt, string response) => Sequence(Tokenizer.Encode(prompt), Tokenizer.Encode(response));

    /// <summary>Prompt ids and a response's text (a rollout decoded without special tokens, as rule rewards read it, re-encoded as train-rm encodes its pairs).</summary>
    public int[] Sequence(ReadOnlySpan<int> prompt, string response) => Sequence(prompt, Tokenizer.Encode(response));

    /// <summary>Scores of sequences (from <see cref="Sequence(ReadOnlySpan{int}, ReadOnlySpan{int})"/>), in their order, <paramref name="batchSize"/> at a time by length.</summary>
    public float[] Score(IReadOnlyList<int[]> sequences, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be >= 1");
        var scores = new float[sequences.Count];
        var order = Enumerable.Range(0, sequences.Count).OrderBy(i => sequences[i].Length).ThenBy(i => i).ToArray();
        foreach (var rows in order.Chunk(batchSize))
        {
            var chunk = Model.Scores(RewardBatch.From(rows.Select(i => sequences[i]).ToArray(), Tokenizer.PadId ?? 0));
            for (int k = 0; k < rows.Length; k++) scores[rows[k]] = chunk[k];
        }
        return scores;
    }

    public void Dispose() => Model.Dispose();
}
