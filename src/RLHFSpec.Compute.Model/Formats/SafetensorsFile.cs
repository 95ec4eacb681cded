using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// Reads a safetensors file: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}</c>, then the data, offsets
/// relative to the data start. The header is validated as strictly as the reference (Rust) implementation does:
/// known dtypes, byte lengths matching shapes, and tensors tiling the data section with no gap, overlap or tail, so
/// a truncated or corrupt file fails at open with a message naming the file and the tensor. Tensor data is read by
/// offset (positional reads on one handle, no seeking state), so large files are streamed, not loaded whole, and
/// several threads may read tensors of one open file at once.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>The reference implementation refuses headers above 100 MB; so do we, so a garbage length fails fast.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const int ChunkBytes = 1 << 20;
    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, TensorInfo> _tensors;

    private SafetensorsFile(string path, SafeFileHandle handle, long dataStart, Dictionary<string, TensorInfo> tensors,
        Dictionary<string, string> metadata)
    {
        FilePath = path;
        _handle = handle;
        DataStart = dataStart;
        _tensors = tensors;
        Metadata = metadata;
        Names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToArray();
    }

    /// <summary>The file's path as given to <see cref="Open"/>.</summary>
    public string FilePath { get; }

    /// <summary>Absolute file offset of the data section (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>Tensor names in ordinal order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>Header entries by name.</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    /// <summary>The "__metadata__" map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens and validates a file. Throws FileNotFoundException when it does not exist and
    /// InvalidDataException "PATH: …" when it is not a valid safetensors file.</summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: safetensors file not found", path);
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            long fileLength = RandomAccess.GetLength(handle);
            if (fileLength < 8)
                throw new InvalidDataException($"{path}: file is {fileLength} bytes, too short for the 8-byte safetensors header length (truncated?)");
            Span<byte> lengthBytes = stackalloc byte[8];
            ReadExactly(handle, lengthBytes, 0, path);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
            if (headerLength > MaxHeaderBytes)
                throw new InvalidDataException($"{path}: header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit (not a safetensors file?)");
            if (8 + (long)headerLength > fileLength)
                throw new InvalidDataException($"{path}: header length {headerLength} runs past the end of the {fileLength}-byte file (truncated?)");
            var header = new byte[headerLength];
            ReadExactly(handle, header, 8, path);
            long dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(path, header, fileLength - dataStart);
            return new SafetensorsFile(path, handle, dataStart, tensors, metadata);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Whether the file holds a tensor of this name.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The header entry of a tensor; InvalidDataException naming file and tensor when absent.</summary>
    public TensorInfo Get(string name) =>
        _tensors.TryGetValue(name, out var info) ? info : throw new InvalidDataException($"{FilePath}: tensor '{name}' is missing");

    /// <summary>Reads a tensor as floats (F16/BF16/F64/I64/I32 converted).</summary>
    public float[] ReadFloats(string name)
    {
        var info = Get(name);
        if (info.ElementCount > Array.MaxLength)
            throw new InvalidDataException($"{FilePath}: tensor '{name}': {info.ElementCount} elements do not fit one array");
        var result = new float[info.ElementCount];
        ReadFloats(name, result);
        return result;
    }

    /// <summary>Reads a tensor as a <see cref="HostTensor"/> of floats.</summary>
    public HostTensor ReadTensor(string name) => new((int[])Get(name).Shape.Clone(), ReadFloats(name));

    /// <summary>Reads a tensor into <paramref name="destination"/>, which must hold exactly its element count.</summary>
    public void ReadFloats(string name, Span<float> destination)
    {
        var info = Get(name);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"{FilePath}: tensor '{name}' has {info.ElementCount} elements {info.ShapeText} but the destination holds {destination.Length}", nameof(destination));
        long offset = DataStart + info.Begin;
        int elementSize = info.DType.SizeOf();
        if (info.DType == TensorDType.F32 && BitConverter.IsLittleEndian)
        {
            // Same layout as in memory: read straight into the destination.
            ReadExactly(_handle, MemoryMarshal.AsBytes(destination), offset, FilePath);
            return;
        }
        int chunkElements = ChunkBytes / elementSize;
        var buffer = ArrayPool<byte>.Shared.Rent(chunkElements * elementSize);
        try
        {
            for (int done = 0; done < destination.Length; done += chunkElements)
            {
                int count = Math.Min(chunkElements, destination.Length - done);
                var bytes = buffer.AsSpan(0, count * elementSize);
                ReadExactly(_handle, bytes, offset + (long)done * elementSize, FilePath);
                FloatCodec.Decode(bytes, info.DType, destination.Slice(done, count));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Reads a tensor's raw little-endian bytes, as stored.</summary>
    public byte[] ReadBytes(string name)
    {
        var info = Get(name);
        if (info.ByteLength > Array.MaxLength)
            throw new InvalidDataException($"{FilePath}: tensor '{name}': {info.ByteLength} bytes do not fit one array");
        var bytes = new byte[info.ByteLength];
        ReadExactly(_handle, bytes, DataStart + info.Begin, FilePath);
        return bytes;
    }

    public void Dispose() => _handle.Dispose();

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (buffer.Length > 0)
        {
            int n = RandomAccess.Read(handle, buffer, offset);
            if (n <= 0) throw new InvalidDataException($"{path}: unexpected end of file at byte {offset} (file truncated while open?)");
            buffer = buffer[n..];
            offset += n;
        }
    }

    private static (Dictionary<string, TensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: header is not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{path}: header is JSON {doc.RootElement.ValueKind}, not an object");
            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (sawMetadata) throw new InvalidDataException($"{path}: header has '__metadata__' twice");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                if (tensors.ContainsKey(property.Name))
                    throw new InvalidDataException($"{path}: tensor '{property.Name}' appears twice in the header");
                tensors.Add(property.Name, ParseTensor(path, property.Name, property.Value));
            }
            CheckTiling(path, tensors.Values, dataLength);
            return (tensors, metadata);
        }
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: '__metadata__' is {value.ValueKind}, not an object of strings");
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new InvalidDataException($"{path}: '__metadata__' field '{entry.Name}' is {entry.Value.ValueKind}, not a string");
            metadata[entry.Name] = entry.Value.GetString()!;
        }
    }

    private static TensorInfo ParseTensor(string path, string name, JsonElement value)
    {
        string where = $"{path}: tensor '{name}'";
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{where}: entry is {value.ValueKind}, not an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new InvalidDataException($"{where}: 'dtype' is missing or not a string");
        string dtypeName = dtypeElement.GetString()!;
        if (!TensorDTypes.TryParseHeaderName(dtypeName, out var dtype))
            throw new InvalidDataException($"{where}: unknown or unsupported dtype '{dtypeName}' (read: F32, F16, BF16, F64, I64, I32)");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{where}: 'shape' is missing or not an array");
        var shape = new int[shapeElement.GetArrayLength()];
        int i = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt32(out int d) || d < 0)
                throw new InvalidDataException($"{where}: shape dimension {i} ({dim.GetRawText()}) is not a non-negative 32-bit integer");
            shape[i++] = d;
        }
        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
            throw new InvalidDataException($"{where}: 'data_offsets' is missing or not a [begin, end] pair");
        var offsets = new long[2];
        i = 0;
        foreach (var o in offsetsElement.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out long v) || v < 0)
                throw new InvalidDataException($"{where}: data offset {o.GetRawText()} is not a non-negative integer");
            offsets[i++] = v;
        }
        if (offsets[1] < offsets[0])
            throw new InvalidDataException($"{where}: data_offsets [{offsets[0]}, {offsets[1]}] end before they begin");
        var info = new TensorInfo(name, dtype, shape, offsets[0], offsets[1]);
        long expected;
        try
        {
            expected = checked(info.ElementCount * dtype.SizeOf());
        }
        catch (OverflowException)
        {
            throw new InvalidDataException($"{where}: shape {info.ShapeText} is too large");
        }
        if (info.ByteLength != expected)
            throw new InvalidDataException($"{where}: data_offsets [{info.Begin}, {info.End}] span {info.ByteLength} bytes but shape {info.ShapeText} of {dtypeName} needs {expected}");
        return info;
    }

    /// <summary>Tensors must cover the data section exactly, in offset order: no overlap, gap or trailing bytes.</summary>
    private static void CheckTiling(string path, IEnumerable<TensorInfo> tensors, long dataLength)
    {
        long position = 0;
        TensorInfo? previous = null;
        foreach (var t in tensors.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.End > dataLength)
                throw new InvalidDataException($"{path}: tensor '{t.Name}': data_offsets [{t.Begin}, {t.End}] run past the {dataLength}-byte data section (file truncated?)");
            if (t.Begin < position)
                throw new InvalidDataException($"{path}: tensor '{t.Name}': data_offsets [{t.Begin}, {t.End}] overlap tensor '{previous!.Name}' [{previous.Begin}, {previous.End}]");
            if (t.Begin > position)
                throw new InvalidDataException($"{path}: tensor '{t.Name}': data_offsets begin at {t.Begin}, leaving a gap after byte {position}");
            position = t.End;
            previous = t;
        }
        if (position != dataLength)
            throw new InvalidDataException($"{path}: data section is {dataLength} bytes but the tensors cover {position} (trailing bytes)");
    }
}
