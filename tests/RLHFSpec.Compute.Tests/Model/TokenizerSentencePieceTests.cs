using System.Text;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// The SentencePiece path (tokenizer.model, Llama 2 style): a tiny BPE ModelProto encoded by hand in protobuf wire
/// format (pieces with scores, trainer_spec model_type BPE, identity normalizer with dummy prefix), loaded through a
/// folder, with ids worked out by SentencePiece's rule (merge the adjacent pair with the highest-scoring piece).
/// </summary>
public class TokenizerSentencePieceTests
{
    private FormatsTestFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new FormatsTestFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private static readonly (string Piece, float Score, int Type)[] Pieces =
    {
        ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),
        ("▁", -5, 1), ("a", -6, 1), ("b", -7, 1),
        ("▁a", -1, 1), ("ab", -2, 1), ("▁ab", -3, 1),
    };

    private static byte[] ModelProto()
    {
        var model = new MemoryStream();
        foreach (var (piece, score, type) in Pieces)
        {
            var p = new MemoryStream();
            Bytes(p, 1, Encoding.UTF8.GetBytes(piece));
            Tag(p, 2, 5);
            p.Write(BitConverter.GetBytes(score));
            Varint(p, 3, (ulong)type);
            Bytes(model, 1, p.ToArray());
        }
        var trainer = new MemoryStream();
        Varint(trainer, 3, 2);                  // model_type = BPE
        Varint(trainer, 4, (ulong)Pieces.Length); // vocab_size
        Varint(trainer, 35, 0);                 // byte_fallback = false
        Varint(trainer, 40, 0);                 // unk_id
        Varint(trainer, 41, 1);                 // bos_id
        Varint(trainer, 42, 2);                 // eos_id
        Varint(trainer, 43, unchecked((ulong)-1L)); // pad_id = -1
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new MemoryStream();
        Bytes(normalizer, 1, Encoding.UTF8.GetBytes("identity"));
        Varint(normalizer, 3, 1);               // add_dummy_prefix
        Varint(normalizer, 4, 0);               // remove_extra_whitespaces
        Varint(normalizer, 5, 1);               // escape_whitespaces
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    private static void Tag(Stream s, int field, int wire) => RawVarint(s, (ulong)((field << 3) | wire));

    private static void Varint(Stream s, int field, ulong value)
    {
        Tag(s, field, 0);
        RawVarint(s, value);
    }

    private static void Bytes(Stream s, int field, byte[] value)
    {
        Tag(s, field, 2);
        RawVarint(s, (ulong)value.Length);
        s.Write(value);
    }

    private static void RawVarint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }

    [Test]
    public void HandBuiltModelEncodesKnownIds()
    {
        File.WriteAllBytes(_folder.File("tokenizer.model"), ModelProto());
        var tok = TextTokenizer.Load(_folder.Path);
        Assert.That(tok.Kind, Is.EqualTo("sentencepiece"));
        Assert.That(tok.VocabSize, Is.EqualTo(Pieces.Length));
        Assert.That((tok.BosId, tok.EosId), Is.EqualTo(((int?)1, (int?)2)));
        // "ab a" → "▁ab▁a": ▁+a (score -1) merges first, both places; then ▁a+b → ▁ab (-3).
        Assert.That(tok.Encode("ab a"), Is.EqualTo(new[] { 8, 6 }));
        Assert.That(tok.Encode("ba"), Is.EqualTo(new[] { 3, 5, 4 }), "▁ b a: no piece ▁b or ba");
        Assert.That(tok.Decode(new[] { 8, 6 }), Is.EqualTo("ab a"));

        // Saving copies the model file and writes tokenizer_config.json; it loads back as the same vocabulary.
        string copy = _folder.File("copy");
        tok.Save(copy);
        var back = TextTokenizer.Load(copy);
        Assert.That(back.Fingerprint, Is.EqualTo(tok.Fingerprint));
        Assert.That(back.EosId, Is.EqualTo(2));
        Assert.That(back.Encode("ab a"), Is.EqualTo(new[] { 8, 6 }));
    }

    [Test]
    public void CorruptModelNamesTheFile()
    {
        string path = _folder.File("tokenizer.model");
        File.WriteAllBytes(path, new byte[] { 0x0A, 0xFF, 0xFF, 0x01, 0x02 });
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(_folder.Path));
        Assert.That(e!.Message, Does.StartWith(path + ":"));
    }
}
