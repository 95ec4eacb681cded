using System.Text;
using Microsoft.ML.Tokenizers;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>Unicode NFC normalisation before tokenisation, as Qwen2's tokenizer.json asks; the library has no such
/// normalizer built in.</summary>
internal sealed class NfcNormalizer : Normalizer
{
    public static readonly NfcNormalizer Instance = new();

    public override string Normalize(string original) => original.IsNormalized(NormalizationForm.FormC) ? original : original.Normalize(NormalizationForm.FormC);

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}
