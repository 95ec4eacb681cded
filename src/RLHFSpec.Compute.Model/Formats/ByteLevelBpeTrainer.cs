using System.Text.RegularExpressions;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// Trains a small byte-level BPE for our own models (synthetic arithmetic/sorting tasks): the 256 byte tokens (ids
/// 0–255 in byte order), then up to <c>numMerges</c> merges learnt greedily from the corpus (most frequent adjacent
/// pair within pre-tokenized words, ties broken by ordinal order so training is deterministic), then the special
/// tokens. The result saves as a tokenizer.json that Hugging Face tokenizers reads.
/// </summary>
public static class ByteLevelBpeTrainer
{
    public static BpeModelData Train(IEnumerable<string> corpus, int numMerges, IReadOnlyList<string> specialTokens,
        string splitPattern = BpeModelData.Qwen2Pattern, int minFrequency = 2)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        ArgumentNullException.ThrowIfNull(specialTokens);
        if (numMerges < 0) throw new ArgumentException($"numMerges must be non-negative, got {numMerges}", nameof(numMerges));
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) vocab.Add(ByteLevelAlphabet.Encode((byte)b).ToString(), b);

        var regex = new Regex(splitPattern, RegexOptions.CultureInvariant);
        var wordCounts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var text in corpus)
            foreach (Match m in regex.Matches(text))
            {
                string w = ByteLevelAlphabet.Encode(m.Value);
                wordCounts[w] = wordCounts.GetValueOrDefault(w) + 1;
            }
        var words = wordCounts.Select(kv => (Symbols: kv.Key.Select(c => c.ToString()).ToList(), Count: kv.Value)).ToList();

        var merges = new List<(string, string)>();
        while (merges.Count < numMerges)
        {
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var key = (symbols[i], symbols[i + 1]);
                    pairs[key] = pairs.GetValueOrDefault(key) + count;
                }
            if (pairs.Count == 0) break;
            var best = pairs.OrderByDescending(kv => kv.Value)
                .ThenBy(kv => kv.Key.Item1, StringComparer.Ordinal).ThenBy(kv => kv.Key.Item2, StringComparer.Ordinal).First();
            if (best.Value < minFrequency) break;
            var (left, right) = best.Key;
            // Two different pairs can spell the same token ("a"+"bc", "ab"+"c"): both merges, one vocabulary entry.
            merges.Add((left, right));
            vocab.TryAdd(left + right, vocab.Count);
            ApplyMerge(words, left, right);
        }
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in specialTokens)
        {
            if (string.IsNullOrEmpty(s)) throw new ArgumentException("special tokens must be non-empty", nameof(specialTokens));
            if (!special.TryAdd(s, vocab.Count + special.Count)) throw new ArgumentException($"special token '{s}' is listed twice", nameof(specialTokens));
        }
        return new BpeModelData(vocab, merges, special, splitPattern);
    }

    private static void ApplyMerge(List<(List<string> Symbols, int Count)> words, string left, string right)
    {
        foreach (var (symbols, _) in words)
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (symbols[i] == left && symbols[i + 1] == right)
                {
                    symbols[i] = left + right;
                    symbols.RemoveAt(i + 1);
                }
    }
}
