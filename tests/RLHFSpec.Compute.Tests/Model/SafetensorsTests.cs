using System.Buffers.Binary;
using System.Text;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>Safetensors reader and writer: round trips in every dtype (values chosen so rounding shows), byte-level
/// layout as the reference implementation writes it, sharded index, and every kind of corrupt header.</summary>
public class SafetensorsTests
{
    private FormatsTestFolder _folder = null!;

    [SetUp]
    public void SetUp() => _folder = new FormatsTestFolder();

    [TearDown]
    public void TearDown() => _folder.Dispose();

    private static HostTensor Random(Random rng, params int[] shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = (float)(rng.NextDouble() * 8 - 4) * MathF.Pow(2, rng.Next(-20, 20));
        return new HostTensor(shape, data);
    }

    private static Dictionary<string, HostTensor> SomeTensors(int seed)
    {
        var rng = new Random(seed);
        return new Dictionary<string, HostTensor>
        {
            ["model.embed_tokens.weight"] = Random(rng, 17, 8),
            ["model.norm.weight"] = Random(rng, 8),
            ["a.scalar"] = Random(rng),
            ["empty"] = Random(rng, 0, 3),
            ["big"] = Random(rng, 3, 300_001),  // more than one conversion chunk
        };
    }

    [Test]
    public void RoundTripEveryDType([Values(TensorDType.F32, TensorDType.F16, TensorDType.BF16)] TensorDType dtype)
    {
        var tensors = SomeTensors((int)dtype + 1);
        string path = _folder.File("m.safetensors");
        SafetensorsWriter.Write(path, tensors, dtype, new Dictionary<string, string> { ["note"] = "x y" });
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Names, Is.EqualTo(tensors.Keys.OrderBy(k => k, StringComparer.Ordinal)));
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
        Assert.That(file.Metadata["note"], Is.EqualTo("x y"));
        Assert.That(file.DataStart % 8, Is.EqualTo(0), "header padded to 8 bytes");
        foreach (var (name, t) in tensors)
        {
            var info = file.Get(name);
            Assert.That(info.DType, Is.EqualTo(dtype));
            Assert.That(info.Shape, Is.EqualTo(t.Shape));
            var back = file.ReadFloats(name);
            var expected = t.Data.Select(v => Expected(v, dtype)).ToArray();
            Assert.That(back, Is.EqualTo(expected), name);
            var span = new float[t.Data.Length];
            file.ReadFloats(name, span);
            Assert.That(span, Is.EqualTo(expected));
        }
    }

    private static float Expected(float v, TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => v,
        TensorDType.F16 => (float)(Half)v,
        _ => BitConverter.UInt32BitsToSingle(BFloat16Reference(v) << 16),
    };

    /// <summary>BF16 by exact arithmetic on doubles: the nearest bf16 value, ties to an even mantissa.</summary>
    private static uint BFloat16Reference(float v)
    {
        uint bits = BitConverter.SingleToUInt32Bits(v);
        uint low = bits & 0xFFFF0000u, high = low + 0x10000u;
        double dl = Math.Abs(v - (double)BitConverter.UInt32BitsToSingle(low));
        double dh = Math.Abs((double)BitConverter.UInt32BitsToSingle(high) - v);
        uint pick = dl < dh ? low : dh < dl ? high : ((low >> 16) & 1) == 0 ? low : high;
        return pick >> 16;
    }

    [Test]
    public void BFloat16RoundsToNearestEven()
    {
        // 1 + 2^-8 is exactly between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1).
        Assert.That(Bf16(1f + MathF.Pow(2, -8)), Is.EqualTo(1f));
        // 1 + 3·2^-8 is between 1 + 2^-7 (odd) and 1 + 2^-6 (even): goes up.
        Assert.That(Bf16(1f + 3 * MathF.Pow(2, -8)), Is.EqualTo(1f + MathF.Pow(2, -6)));
        Assert.That(Bf16(1f + MathF.Pow(2, -8) + MathF.Pow(2, -20)), Is.EqualTo(1f + MathF.Pow(2, -7)));
        Assert.That(float.IsNaN(Bf16(float.NaN)));
        Assert.That(Bf16(float.PositiveInfinity), Is.EqualTo(float.PositiveInfinity));
        Assert.That(Bf16(float.MaxValue), Is.EqualTo(float.PositiveInfinity), "rounds up past the largest bf16");
    }

    private float Bf16(float v)
    {
        string path = _folder.File("one.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, HostTensor> { ["x"] = new(new[] { 1 }, new[] { v }) }, TensorDType.BF16);
        using var file = SafetensorsFile.Open(path);
        return file.ReadFloats("x")[0];
    }

    [Test]
    public void WritesTheReferenceLayout()
    {
        // What Python's safetensors.torch.save_file({"b": tensor([1., 2.]), "a": tensor([[3.]])}) lays out: 8-byte
        // length, JSON, space padding to 8, tensors contiguous.
        string path = _folder.File("layout.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, HostTensor>
        {
            ["b"] = new(new[] { 2 }, new[] { 1f, 2f }),
            ["a"] = new(new[] { 1, 1 }, new[] { 3f }),
        }, TensorDType.F32);
        var bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(n % 8, Is.EqualTo(0));
        string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.That(header.TrimEnd(' '), Is.EqualTo(
            "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},"
            + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}"));
        Assert.That(bytes.Length, Is.EqualTo(8 + n + 12));
        Assert.That(BitConverter.ToSingle(bytes, (int)(8 + n)), Is.EqualTo(3f));
        Assert.That(BitConverter.ToSingle(bytes, (int)(8 + n + 8)), Is.EqualTo(2f));
    }

    [Test]
    public void ReadsTheOtherDTypesAndRawBytes()
    {
        // F64/I64/I32 are written by hand: the writer does not produce them.
        string path = WriteRaw("other.safetensors",
            "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},\"l\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[16,24]},"
            + "\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[24,28]}}",
            data: [.. BitConverter.GetBytes(1.5), .. BitConverter.GetBytes(-2.25), .. BitConverter.GetBytes(-7L), .. BitConverter.GetBytes(42)]);
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.ReadFloats("d"), Is.EqualTo(new[] { 1.5f, -2.25f }));
        Assert.That(file.ReadFloats("l"), Is.EqualTo(new[] { -7f }));
        Assert.That(file.ReadFloats("i"), Is.EqualTo(new[] { 42f }));
        Assert.That(file.ReadBytes("i"), Is.EqualTo(BitConverter.GetBytes(42)));
        Assert.That(file.Metadata, Is.Empty);
    }

    [Test]
    public void ShardedRoundTrip()
    {
        var tensors = SomeTensors(5);
        var files = SafetensorsWriter.WriteSharded(_folder.Path, tensors, TensorDType.BF16, maxShardBytes: 600);
        Assert.That(files[^1], Is.EqualTo(SafetensorsWriter.IndexFileName));
        Assert.That(files.Count, Is.GreaterThan(3), "small shard limit splits the tensors");
        Assert.That(files[0], Is.EqualTo($"model-00001-of-{files.Count - 1:D5}.safetensors"));
        using var all = SafetensorsCollection.OpenFolder(_folder.Path);
        Assert.That(all.Names, Is.EquivalentTo(tensors.Keys));
        Assert.That(all.Files.Count, Is.EqualTo(files.Count - 1));
        foreach (var (name, t) in tensors)
            Assert.That(all.ReadFloats(name), Is.EqualTo(t.Data.Select(v => Expected(v, TensorDType.BF16)).ToArray()), name);
        string index = File.ReadAllText(_folder.File(SafetensorsWriter.IndexFileName));
        long total = tensors.Values.Sum(t => 2L * t.Data.Length);
        Assert.That(index, Does.Contain($"\"total_size\": {total}"));
    }

    [Test]
    public void ShardedThatFitsIsOneFile()
    {
        var files = SafetensorsWriter.WriteSharded(_folder.Path, SomeTensors(6), TensorDType.F32, maxShardBytes: 1L << 30);
        Assert.That(files, Is.EqualTo(new[] { SafetensorsWriter.SingleFileName }));
        using var all = SafetensorsCollection.OpenFolder(_folder.Path);
        Assert.That(all.Files.Count, Is.EqualTo(1));
    }

    [Test]
    public void IndexNamingAMissingTensorNamesShardAndTensor()
    {
        SafetensorsWriter.WriteSharded(_folder.Path, SomeTensors(7), TensorDType.F32, maxShardBytes: 600);
        string index = _folder.File(SafetensorsWriter.IndexFileName);
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"model.norm.weight\"", "\"model.ghost.weight\""));
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsCollection.OpenFolder(_folder.Path).Dispose());
        Assert.That(e!.Message, Does.Contain("model-0000").And.Contain("'model.ghost.weight'"));
    }

    [Test]
    public void IndexNamingAMissingShard()
    {
        SafetensorsWriter.WriteSharded(_folder.Path, SomeTensors(8), TensorDType.F32, maxShardBytes: 600);
        File.Delete(Directory.GetFiles(_folder.Path, "model-00002-*").Single());
        var e = Assert.Throws<FileNotFoundException>(() => SafetensorsCollection.OpenFolder(_folder.Path).Dispose());
        Assert.That(e!.Message, Does.Contain(SafetensorsWriter.IndexFileName).And.Contain("model-00002-of-"));
    }

    [Test]
    public void WriterLeavesNoFileWhenItFails()
    {
        string path = _folder.File("fail.safetensors");
        var tensors = new Dictionary<string, HostTensor> { ["x"] = new(new[] { 1 }, new[] { 1f }) };
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, tensors, TensorDType.I32));
        Assert.Throws<InvalidOperationException>(() => SafetensorsWriter.Write(path, tensors, _ => throw new InvalidOperationException()));
        Assert.That(Directory.GetFiles(_folder.Path), Is.Empty);
        // Overwriting keeps the old file intact until the new one is complete.
        SafetensorsWriter.Write(path, tensors, TensorDType.F32);
        Assert.That(Directory.GetFiles(_folder.Path), Has.Length.EqualTo(1));
    }

    // ---- corrupt files: each error names the file and, where there is one, the tensor ----

    private string WriteRaw(string name, string header, byte[] data, long? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)(declaredLength ?? h.Length));
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        string path = _folder.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static void AssertCorrupt(string path, params string[] fragments)
    {
        var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.That(e!.Message, Does.StartWith(path + ":"));
        foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }

    [Test]
    public void TruncatedFile()
    {
        string path = _folder.File("t.safetensors");
        SafetensorsWriter.Write(path, SomeTensors(9), TensorDType.F16);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^10]);
        AssertCorrupt(path, "tensor 'model.norm.weight'", "truncated");
        File.WriteAllBytes(path, bytes[..5]);
        AssertCorrupt(path, "too short");
    }

    [Test]
    public void HeaderLengthBeyondFile()
    {
        AssertCorrupt(WriteRaw("h.safetensors", "{}", [], declaredLength: 1000), "header length 1000");
        AssertCorrupt(WriteRaw("h2.safetensors", "{}", [], declaredLength: long.MaxValue), "limit");
    }

    [Test]
    public void BadJson()
    {
        AssertCorrupt(WriteRaw("j.safetensors", "{\"x\": {\"dtype\": ", []), "not valid JSON");
        AssertCorrupt(WriteRaw("j2.safetensors", "[1, 2]", []), "not an object");
        AssertCorrupt(WriteRaw("j3.safetensors", "{\"__metadata__\": {\"format\": 3}}", []), "'format'");
        AssertCorrupt(WriteRaw("j4.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", new byte[4]), "tensor 'x'", "dimension");
        AssertCorrupt(WriteRaw("j5.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", new byte[4]), "tensor 'x'", "data_offsets");
    }

    [Test]
    public void OverlappingOffsets()
    {
        AssertCorrupt(WriteRaw("o.safetensors",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            new byte[12]), "tensor 'b'", "overlap", "'a'");
    }

    [Test]
    public void GapAndTrailingBytes()
    {
        AssertCorrupt(WriteRaw("g.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8]), "tensor 'a'", "gap");
        AssertCorrupt(WriteRaw("g2.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[8]), "trailing");
    }

    [Test]
    public void ByteLengthNotMatchingShape()
    {
        AssertCorrupt(WriteRaw("s.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,8]}}", new byte[8]), "tensor 'a'", "needs 6");
    }

    [Test]
    public void UnknownDType()
    {
        AssertCorrupt(WriteRaw("d.safetensors", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", new byte[1]), "tensor 'a'", "'Q4'");
    }

    [Test]
    public void MissingTensorAndMissingFile()
    {
        string path = _folder.File("m.safetensors");
        SafetensorsWriter.Write(path, SomeTensors(10), TensorDType.F32);
        using (var file = SafetensorsFile.Open(path))
        {
            var e = Assert.Throws<InvalidDataException>(() => file.ReadFloats("lm_head.weight"));
            Assert.That(e!.Message, Does.Contain(path).And.Contain("'lm_head.weight'"));
            Assert.Throws<ArgumentException>(() => file.ReadFloats("model.norm.weight", new float[3]));
        }
        Assert.Throws<FileNotFoundException>(() => SafetensorsFile.Open(_folder.File("nope.safetensors")));
    }
}
