using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// A tokenizer loaded from a Hugging Face folder through Microsoft.ML.Tokenizers: byte-level BPE from tokenizer.json
/// (or vocab.json + merges.txt), a tiktoken file, or a SentencePiece tokenizer.model. <see cref="Encode"/> adds no
/// special tokens (callers put BOS where their model wants it); special token names in the text are matched as
/// special tokens. Bos/Eos/Pad come from tokenizer_config.json, else from the model config (see
/// <see cref="WithSpecialIds"/>). <see cref="Fingerprint"/> identifies the vocabulary, so a draft model can be checked
/// against its policy.
/// </summary>
public sealed class TextTokenizer
{
    /// <summary>The tiktoken split regex of cl100k_base (and Llama 3); used for tiktoken files unless told otherwise.</summary>
    public const string Cl100kPattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public const string SentencePieceFileName = "tokenizer.model";

    private readonly HashSet<int> _specialIds;

    private TextTokenizer(Tokenizer inner, string kind, IReadOnlyList<string> sourceFiles, int vocabSize,
        IReadOnlyDictionary<string, int> specialTokens, BpeModelData? bpe, string fingerprint)
    {
        Inner = inner;
        Kind = kind;
        SourceFiles = sourceFiles;
        VocabSize = vocabSize;
        SpecialTokens = specialTokens;
        Bpe = bpe;
        Fingerprint = fingerprint;
        _specialIds = specialTokens.Values.ToHashSet();
    }

    /// <summary>The library's tokenizer.</summary>
    public Tokenizer Inner { get; }

    /// <summary>"bpe", "tiktoken" or "sentencepiece".</summary>
    public string Kind { get; }

    /// <summary>Files it was loaded from (empty for one built in memory).</summary>
    public IReadOnlyList<string> SourceFiles { get; }

    /// <summary>One past the largest token id (vocabulary and special tokens).</summary>
    public int VocabSize { get; }

    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>The BPE content when Kind is "bpe" (what <see cref="Save"/> writes).</summary>
    public BpeModelData? Bpe { get; }

    /// <summary>SHA-256 over the vocabulary, merges and special tokens (BPE) or the model file and special tokens.</summary>
    public string Fingerprint { get; }

    public int? BosId { get; private init; }
    public int? EosId { get; private init; }
    public int? PadId { get; private init; }

    /// <summary>Text → ids, no special tokens added.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Inner.EncodeToIds(text).ToArray();
    }

    /// <summary>
    /// <see cref="Encode"/> for text a user gave (prompts): a BPE or tiktoken vocabulary that lacks a character drops it
    /// silently (a character-level vocabulary like the default models' has no byte fallback), so this checks that the
    /// ids decode back to <paramref name="text"/> and otherwise throws a FormatException naming
    /// <paramref name="what"/>, the character and its offset. SentencePiece normalizes text (spaces), so its ids are
    /// not checked.
    /// </summary>
    public int[] EncodeChecked(string text, string what)
    {
        var ids = Encode(text);
        if (Kind == "sentencepiece") return ids;
        string back = Decode(ids);
        if (back == text) return ids;
        int at = 0;
        while (at < back.Length && at < text.Length && back[at] == text[at]) at++;
        if (at >= text.Length) throw new FormatException($"{what}: does not encode and decode back to itself with this tokenizer");
        // A character outside the BMP is a surrogate pair: name the whole code point, not its first half.
        if (char.IsLowSurrogate(text[at]) && at > 0 && char.IsHighSurrogate(text[at - 1])) at--;
        var rune = System.Text.Rune.GetRuneAt(text, at);
        throw new FormatException($"{what}: character '{rune}' (U+{rune.Value:X4}) at offset {at} is not in the tokenizer's vocabulary (it would be dropped)");
    }

    /// <summary>Ids → text; special tokens are written out unless <paramref name="skipSpecialTokens"/>.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var list = new List<int>(ids.Length);
        foreach (var id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentException($"token id {id} is outside the vocabulary (size {VocabSize})", nameof(ids));
            if (!(skipSpecialTokens && _specialIds.Contains(id))) list.Add(id);
        }
        return Inner is BpeTokenizer bpe ? bpe.Decode(list, considerSpecialTokens: true) : Inner.Decode(list);
    }

    /// <summary>A copy with bos/eos/pad ids set where given (ids must be inside the vocabulary).</summary>
    public TextTokenizer WithSpecialIds(int? bos, int? eos, int? pad)
    {
        foreach (var (name, id) in new[] { ("bos", bos), ("eos", eos), ("pad", pad) })
            if (id is { } v && (v < 0 || v >= VocabSize)) throw new ArgumentException($"{name} id {v} is outside the vocabulary (size {VocabSize})");
        return new TextTokenizer(Inner, Kind, SourceFiles, VocabSize, SpecialTokens, Bpe, Fingerprint)
        {
            BosId = bos ?? BosId,
            EosId = eos ?? EosId,
            PadId = pad ?? PadId,
        };
    }

    /// <summary>A byte-level BPE tokenizer from its content (e.g. from <see cref="ByteLevelBpeTrainer"/>).</summary>
    public static TextTokenizer FromBpe(BpeModelData data, IReadOnlyList<string>? sourceFiles = null)
    {
        var special = data.SpecialTokens;
        var options = new BpeOptions(data.Vocabulary)
        {
            Merges = data.Merges.Select(m => m.Left + " " + m.Right).ToList(),
            SpecialTokens = special.Count > 0 ? special : null,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(data.SplitPattern, RegexOptions.Compiled | RegexOptions.CultureInvariant),
                special.Count > 0 ? special : null),
            Normalizer = data.NormalizeNfc ? NfcNormalizer.Instance : null,
        };
        var inner = BpeTokenizer.Create(options);
        var sb = new StringBuilder("bpe\n");
        foreach (var (t, id) in data.Vocabulary.OrderBy(kv => kv.Value)) sb.Append(id).Append('\t').Append(t).Append('\n');
        sb.Append("merges\n");
        foreach (var (l, r) in data.Merges) sb.Append(l).Append(' ').Append(r).Append('\n');
        AppendSpecial(sb, special);
        sb.Append("split\n").Append(data.SplitPattern).Append('\n').Append(data.NormalizeNfc);
        return new TextTokenizer(inner, "bpe", sourceFiles ?? Array.Empty<string>(), data.VocabSize, special, data, Hash(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    /// <summary>A tiktoken file (base64 token, space, rank per line) with the given special tokens.</summary>
    public static TextTokenizer LoadTiktoken(string path, IReadOnlyDictionary<string, int>? specialTokens = null, string pattern = Cl100kPattern)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: tiktoken file not found", path);
        var bytes = File.ReadAllBytes(path);
        var special = specialTokens ?? new Dictionary<string, int>();
        Tokenizer inner;
        int maxRank = -1;
        try
        {
            foreach (var line in Encoding.UTF8.GetString(bytes).Split('\n'))
            {
                if (line.Length == 0) continue;
                int space = line.IndexOf(' ');
                if (space <= 0 || !int.TryParse(line.AsSpan(space + 1), out int rank)) throw new FormatException($"line '{Shorten(line)}' is not 'base64 rank'");
                Convert.FromBase64String(line[..space]);
                maxRank = Math.Max(maxRank, rank);
            }
            if (maxRank < 0) throw new FormatException("no tokens");
            inner = TiktokenTokenizer.Create(new MemoryStream(bytes),
                new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant), special.Count > 0 ? special : null),
                null, special.Count > 0 ? special : null);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"{path}: not a tiktoken file ({e.Message})", e);
        }
        int vocabSize = Math.Max(maxRank + 1, special.Count == 0 ? 0 : special.Values.Max() + 1);
        var sb = new StringBuilder("tiktoken\n").Append(Hash(bytes)).Append('\n');
        AppendSpecial(sb, special);
        sb.Append(pattern);
        return new TextTokenizer(inner, "tiktoken", new[] { path }, vocabSize, special, null, Hash(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    /// <summary>A SentencePiece model (tokenizer.model, Llama 2 style) through the library's LlamaTokenizer.</summary>
    public static TextTokenizer LoadSentencePiece(string path, IReadOnlyDictionary<string, int>? specialTokens = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: SentencePiece model not found", path);
        var bytes = File.ReadAllBytes(path);
        SentencePieceTokenizer inner;
        try
        {
            inner = LlamaTokenizer.Create(new MemoryStream(bytes), addBeginOfSentence: false, addEndOfSentence: false,
                specialTokens: specialTokens is { Count: > 0 } ? specialTokens : null);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{path}: not a SentencePiece model the library supports ({e.Message})", e);
        }
        var special = new Dictionary<string, int>(inner.SpecialTokens ?? new Dictionary<string, int>(), StringComparer.Ordinal);
        int vocabSize = Math.Max(inner.Vocabulary.Count == 0 ? 0 : inner.Vocabulary.Values.Max() + 1, special.Count == 0 ? 0 : special.Values.Max() + 1);
        var sb = new StringBuilder("sentencepiece\n").Append(Hash(bytes)).Append('\n');
        AppendSpecial(sb, special);
        return new TextTokenizer(inner, "sentencepiece", new[] { path }, vocabSize, special, null, Hash(Encoding.UTF8.GetBytes(sb.ToString())))
        {
            BosId = inner.BeginningOfSentenceId,
            EosId = inner.EndOfSentenceId,
        };
    }

    /// <summary>
    /// Loads the tokenizer of a Hugging Face folder: tokenizer.json (byte-level BPE), else vocab.json + merges.txt,
    /// else tokenizer.model (SentencePiece, or tiktoken text as Llama 3's original/ has), else a single *.tiktoken file;
    /// tokenizer.json of another kind falls back to tokenizer.model when present. Special tokens and bos/eos/pad from
    /// tokenizer_config.json.
    /// </summary>
    public static TextTokenizer Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: tokenizer folder not found");
        string configPath = Path.Combine(folder, TokenizerConfigJson.FileName);
        var config = TokenizerConfigJson.Read(configPath);
        string json = Path.Combine(folder, TokenizerJson.FileName);
        string vocab = Path.Combine(folder, TokenizerJson.VocabFileName), merges = Path.Combine(folder, TokenizerJson.MergesFileName);
        string model = Path.Combine(folder, SentencePieceFileName);
        TextTokenizer tokenizer;
        if (File.Exists(json))
        {
            try
            {
                tokenizer = FromBpe(TokenizerJson.Read(json), new[] { json });
            }
            catch (InvalidDataException) when (File.Exists(model))
            {
                tokenizer = LoadModelFile(model, config.AddedTokens);
            }
        }
        else if (File.Exists(vocab) && File.Exists(merges))
            tokenizer = FromBpe(TokenizerJson.ReadVocabMerges(vocab, merges, config.AddedTokens), new[] { vocab, merges });
        else if (File.Exists(model))
            tokenizer = LoadModelFile(model, config.AddedTokens);
        else
        {
            var tiktoken = Directory.GetFiles(folder, "*.tiktoken");
            if (tiktoken.Length != 1)
                throw new FileNotFoundException($"{folder}: no tokenizer (tokenizer.json, vocab.json + merges.txt, tokenizer.model or one *.tiktoken)");
            tokenizer = LoadTiktoken(tiktoken[0], config.AddedTokens);
        }
        return tokenizer.WithSpecialIds(Resolve(tokenizer, configPath, "bos_token", config.Bos),
            Resolve(tokenizer, configPath, "eos_token", config.Eos), Resolve(tokenizer, configPath, "pad_token", config.Pad));
    }

    /// <summary>
    /// Writes the tokenizer into a folder in Hugging Face layout: for BPE tokenizer.json, vocab.json, merges.txt; for
    /// tiktoken/SentencePiece a copy of the model file; and tokenizer_config.json with the special tokens.
    /// </summary>
    public void Save(string folder, int modelMaxLength = 2048)
    {
        Directory.CreateDirectory(folder);
        if (Bpe is not null)
        {
            TokenizerJson.Write(Path.Combine(folder, TokenizerJson.FileName), Bpe);
            TokenizerJson.WriteVocabMerges(folder, Bpe);
        }
        else
        {
            foreach (var source in SourceFiles)
            {
                string target = Path.Combine(folder, Path.GetFileName(source));
                if (Path.GetFullPath(source) != Path.GetFullPath(target))
                    AtomicFile.Write(target, s => { using var input = File.OpenRead(source); input.CopyTo(s); });
            }
        }
        TokenizerConfigJson.Write(Path.Combine(folder, TokenizerConfigJson.FileName), NameOf(BosId), NameOf(EosId), NameOf(PadId),
            SpecialTokens, modelMaxLength);
    }

    /// <summary>The token string of an id (special tokens first), for writing tokenizer_config.json.</summary>
    private string? NameOf(int? id)
    {
        if (id is not { } v) return null;
        foreach (var (name, sid) in SpecialTokens) if (sid == v) return name;
        if (Bpe is not null)
            foreach (var (name, vid) in Bpe.Vocabulary) if (vid == v) return name;
        // SentencePiece control tokens (<s>, </s>) decode to nothing: take their piece from the vocabulary.
        if (Inner is SentencePieceTokenizer sp)
            foreach (var (name, vid) in sp.Vocabulary) if (vid == v) return name;
        return Inner.Decode(new[] { v });
    }

    private static TextTokenizer LoadModelFile(string path, IReadOnlyDictionary<string, int> special)
    {
        // Llama 3 ships a tiktoken text file under the SentencePiece name; tell them apart by the first line.
        using (var reader = new StreamReader(path))
        {
            var first = reader.ReadLine() ?? "";
            int space = first.IndexOf(' ');
            if (space > 0 && int.TryParse(first.AsSpan(space + 1), out _) && IsBase64(first[..space]))
                return LoadTiktoken(path, special);
        }
        return LoadSentencePiece(path, special);
    }

    private static bool IsBase64(string s)
    {
        Span<byte> buffer = stackalloc byte[s.Length];
        return Convert.TryFromBase64String(s, buffer, out _);
    }

    private static int? Resolve(TextTokenizer tokenizer, string configPath, string field, string? name)
    {
        if (name is null) return null;
        if (tokenizer.SpecialTokens.TryGetValue(name, out int id)) return id;
        if (tokenizer.Bpe is not null && tokenizer.Bpe.Vocabulary.TryGetValue(ByteLevelAlphabet.Encode(name), out id)) return id;
        if (tokenizer.Inner is SentencePieceTokenizer sp && sp.Vocabulary.TryGetValue(name, out id)) return id;
        var ids = tokenizer.Inner.EncodeToIds(name);
        if (ids.Count == 1) return ids[0];
        throw new InvalidDataException($"{configPath}: field '{field}': token '{name}' is not a single token of the vocabulary");
    }

    private static void AppendSpecial(StringBuilder sb, IReadOnlyDictionary<string, int> special)
    {
        sb.Append("special\n");
        foreach (var (t, id) in special.OrderBy(kv => kv.Value)) sb.Append(id).Append('\t').Append(t).Append('\n');
    }

    private static string Hash(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    private static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
