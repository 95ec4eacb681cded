namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// The content of a byte-level BPE tokenizer as tokenizer.json stores it: vocabulary (token in byte-level characters →
/// id), merges in priority order, added/special tokens with their ids, and the pre-tokenizer's split regex.
/// </summary>
public sealed record BpeModelData(
    IReadOnlyDictionary<string, int> Vocabulary,
    IReadOnlyList<(string Left, string Right)> Merges,
    IReadOnlyDictionary<string, int> SpecialTokens,
    string SplitPattern,
    bool NormalizeNfc = false)
{
    /// <summary>GPT-2's pre-tokenizer regex (what a ByteLevel pre-tokenizer with use_regex applies).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>cl100k / Qwen2-style regex: contractions, letters with one leading non-letter, single digits, …</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>One past the largest id of the vocabulary and the special tokens.</summary>
    public int VocabSize => Math.Max(Vocabulary.Count == 0 ? 0 : Vocabulary.Values.Max() + 1,
        SpecialTokens.Count == 0 ? 0 : SpecialTokens.Values.Max() + 1);
}
