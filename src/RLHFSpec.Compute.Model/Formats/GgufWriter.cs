using System.Text;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// Writes a GGUF v3 file (the format of ggml / llama.cpp): header (magic "GGUF", version, tensor and key counts),
/// typed metadata key/value pairs, tensor descriptors (name, dimensions innermost first, ggml type, offset) and the
/// tensor data, each tensor aligned to <see cref="Alignment"/> bytes. Little-endian throughout. Metadata is written in
/// the order it was added; tensor data is produced by a callback per tensor, so a large model is streamed, not held.
/// </summary>
public sealed class GgufWriter
{
    public const uint Version = 3;

    /// <summary>GGUF's default alignment (general.alignment is not written, so readers assume it).</summary>
    public const int Alignment = 32;

    /// <summary>ggml tensor types this writer emits.</summary>
    public enum TensorType : uint { F32 = 0, F16 = 1 }

    // gguf_type of metadata values.
    private const uint TypeUInt32 = 4, TypeInt32 = 5, TypeFloat32 = 6, TypeBool = 7, TypeString = 8, TypeArray = 9;

    private readonly List<(string Key, Action<BinaryWriter> Write)> _metadata = new();
    private readonly List<Tensor> _tensors = new();
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);

    private sealed record Tensor(string Name, long[] Dims, TensorType Type, long Bytes, Action<Stream> WriteData);

    public int TensorCount => _tensors.Count;

    public void Add(string key, string value) => AddKey(key, w => { w.Write(TypeString); WriteString(w, value); });

    public void Add(string key, uint value) => AddKey(key, w => { w.Write(TypeUInt32); w.Write(value); });

    public void Add(string key, float value) => AddKey(key, w => { w.Write(TypeFloat32); w.Write(value); });

    public void Add(string key, bool value) => AddKey(key, w => { w.Write(TypeBool); w.Write((byte)(value ? 1 : 0)); });

    public void Add(string key, IReadOnlyList<string> values) => AddKey(key, w =>
    {
        w.Write(TypeArray);
        w.Write(TypeString);
        w.Write((ulong)values.Count);
        foreach (var v in values) WriteString(w, v);
    });

    public void Add(string key, IReadOnlyList<int> values) => AddKey(key, w =>
    {
        w.Write(TypeArray);
        w.Write(TypeInt32);
        w.Write((ulong)values.Count);
        foreach (var v in values) w.Write(v);
    });

    /// <summary>
    /// Adds a tensor. <paramref name="shape"/> is in PyTorch order (outermost first, e.g. [out, in] for a linear
    /// weight); GGUF stores the reverse. <paramref name="writeData"/> must write exactly the tensor's bytes, row-major.
    /// </summary>
    public void AddTensor(string name, IReadOnlyList<int> shape, TensorType type, Action<Stream> writeData)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(writeData);
        if (!_tensorNames.Add(name)) throw new ArgumentException($"GGUF tensor '{name}' added twice", nameof(name));
        if (shape.Count is < 1 or > 4 || shape.Any(d => d < 1)) throw new ArgumentException($"GGUF tensor '{name}': shape [{string.Join(", ", shape)}] is not 1 to 4 positive dimensions", nameof(shape));
        long elements = shape.Aggregate(1L, (a, d) => a * d);
        long bytes = elements * (type == TensorType.F32 ? 4 : 2);
        _tensors.Add(new Tensor(name, shape.Reverse().Select(d => (long)d).ToArray(), type, bytes, writeData));
    }

    /// <summary>Writes the whole file to <paramref name="stream"/> (which must start at the file's first byte).</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var w = new BinaryWriter(stream, new UTF8Encoding(false), leaveOpen: true);
        w.Write("GGUF"u8);
        w.Write(Version);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, write) in _metadata)
        {
            WriteString(w, key);
            write(w);
        }
        long offset = 0;
        var offsets = new long[_tensors.Count];
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (var d in t.Dims) w.Write((ulong)d);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offsets[i] = offset;
            offset = Align(offset + t.Bytes);
        }
        w.Flush();
        Pad(stream, stream.Position);
        long dataStart = stream.Position;
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            long before = stream.Position;
            if (before - dataStart != offsets[i]) throw new InvalidOperationException($"GGUF tensor '{t.Name}': data at {before - dataStart}, descriptor says {offsets[i]}");
            t.WriteData(stream);
            long written = stream.Position - before;
            if (written != t.Bytes) throw new InvalidOperationException($"GGUF tensor '{t.Name}': wrote {written} bytes, expected {t.Bytes}");
            Pad(stream, written);
        }
        stream.Flush();
    }

    private void AddKey(string key, Action<BinaryWriter> write)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (!_keys.Add(key)) throw new ArgumentException($"GGUF metadata key '{key}' added twice", nameof(key));
        _metadata.Add((key, write));
    }

    private static long Align(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream stream, long length)
    {
        int pad = (int)(Align(length) - length);
        if (pad > 0) stream.Write(new byte[pad]);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }
}
