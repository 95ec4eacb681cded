using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// The tokenizer shared by the default policy and its drafts: one token per character of
/// <see cref="ArithmeticTask.Alphabet"/> (a byte-level BPE without merges, so every digit is its own token and
/// arithmetic stays learnable digit by digit), then <see cref="EndOfText"/> (EOS) and <see cref="Pad"/>. Ids: the
/// alphabet in its order (0–13), EOS 14, pad 15. Saves and loads as an ordinary Hugging Face tokenizer.json.
/// </summary>
public static class ArithmeticTokenizer
{
    public const string EndOfText = "<|endoftext|>";
    public const string Pad = "<|pad|>";

    public static TextTokenizer Create()
    {
        // The alphabet is printable ASCII, which byte-level BPE writes as itself.
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (char c in ArithmeticTask.Alphabet) vocabulary.Add(c.ToString(), vocabulary.Count);
        var special = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [EndOfText] = vocabulary.Count,
            [Pad] = vocabulary.Count + 1,
        };
        var data = new BpeModelData(vocabulary, Array.Empty<(string, string)>(), special, BpeModelData.Qwen2Pattern);
        return TextTokenizer.FromBpe(data).WithSpecialIds(bos: null, eos: special[EndOfText], pad: special[Pad]);
    }
}
