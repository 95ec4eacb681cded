namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// GPT-2's byte-to-character table used by byte-level BPE (GPT-2, Qwen2, Llama 3 tokenizer.json files): printable
/// bytes map to themselves, the others to code points from U+0100 up, so every byte string is a visible string without
/// spaces (space becomes 'Ġ'). Vocabularies and merges in tokenizer.json are written in these characters.
/// </summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = Build();

    /// <summary>The character standing for byte <paramref name="b"/>.</summary>
    public static char Encode(byte b) => ByteToChar[b];

    /// <summary>The byte-level spelling of a string's UTF-8 bytes.</summary>
    public static string Encode(string text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    private static char[] Build()
    {
        var table = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)(256 + next++);
        }
        return table;
    }
}
