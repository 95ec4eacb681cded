using System.Buffers;
using System.Buffers.Binary;
using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// Writes safetensors files that the Hugging Face readers (Python safetensors, transformers, candle) load: tensors in
/// ordinal name order, contiguous in that order, header JSON padded with spaces to a multiple of 8 bytes, metadata
/// <c>{"format": "pt"}</c> (transformers refuses files without it). Floats are converted to the target dtype
/// (F16 and BF16 round to nearest even). Each file goes through a temporary sibling and a rename.
/// Sharded checkpoints follow the transformers layout: <c>model-00001-of-00003.safetensors</c> … plus
/// <c>model.safetensors.index.json</c>; a checkpoint that fits one shard is a single <c>model.safetensors</c>.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>The single-file name transformers looks for.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>The index name transformers looks for with sharded weights.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private const int ChunkElements = 1 << 18;

    /// <summary>Writes one file with every tensor in <paramref name="dtype"/>.</summary>
    public static void Write(string path, IReadOnlyDictionary<string, HostTensor> tensors, TensorDType dtype,
        IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors, _ => dtype, metadata);

    /// <summary>Writes one file, each tensor in the dtype <paramref name="dtypeOf"/> picks for its name (e.g. norms in
    /// F32 and matrices in BF16).</summary>
    public static void Write(string path, IReadOnlyDictionary<string, HostTensor> tensors, Func<string, TensorDType> dtypeOf,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(dtypeOf);
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToArray();
        var dtypes = new TensorDType[names.Length];
        for (int i = 0; i < names.Length; i++)
        {
            CheckName(path, names[i]);
            dtypes[i] = dtypeOf(names[i]);
            if (!dtypes[i].IsWritable())
                throw new ArgumentException($"{path}: tensor '{names[i]}': cannot write dtype {dtypes[i].ToHeaderName()} (F32, F16, BF16 only)", nameof(dtypeOf));
        }
        byte[] header = BuildHeader(names, dtypes, tensors, metadata);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(header);
            var buffer = ArrayPool<byte>.Shared.Rent(ChunkElements * 4);
            try
            {
                for (int i = 0; i < names.Length; i++)
                {
                    var data = tensors[names[i]].Data;
                    int size = dtypes[i].SizeOf();
                    for (int done = 0; done < data.Length; done += ChunkElements)
                    {
                        int count = Math.Min(ChunkElements, data.Length - done);
                        var bytes = buffer.AsSpan(0, count * size);
                        FloatCodec.Encode(data.AsSpan(done, count), dtypes[i], bytes);
                        stream.Write(bytes);
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        });
    }

    /// <summary>
    /// Writes the tensors into <paramref name="folder"/> as shards of at most <paramref name="maxShardBytes"/> bytes
    /// of tensor data (a tensor larger than that gets a shard of its own, as transformers does) plus the index; or as a
    /// single <c>model.safetensors</c> without index when everything fits one shard. Returns the file names written
    /// (index last). Stale files of the other layout are not removed here: the checkpoint writer starts from an
    /// empty folder.
    /// </summary>
    public static IReadOnlyList<string> WriteSharded(string folder, IReadOnlyDictionary<string, HostTensor> tensors,
        TensorDType dtype, long maxShardBytes)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        ArgumentNullException.ThrowIfNull(tensors);
        if (maxShardBytes <= 0) throw new ArgumentException($"maxShardBytes must be positive, got {maxShardBytes}", nameof(maxShardBytes));
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToArray();
        var shards = new List<List<string>>();
        long current = 0, total = 0;
        foreach (var name in names)
        {
            long bytes = (long)tensors[name].Data.Length * dtype.SizeOf();
            total += bytes;
            if (shards.Count == 0 || (current + bytes > maxShardBytes && current > 0))
            {
                shards.Add(new List<string>());
                current = 0;
            }
            shards[^1].Add(name);
            current += bytes;
        }
        Directory.CreateDirectory(folder);
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (shards.Count <= 1)
        {
            Write(Path.Combine(folder, SingleFileName), tensors, dtype, metadata);
            return new[] { SingleFileName };
        }
        var written = new List<string>();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            var part = shards[s].ToDictionary(n => n, n => tensors[n], StringComparer.Ordinal);
            Write(Path.Combine(folder, file), part, dtype, metadata);
            foreach (var n in shards[s]) weightMap[n] = file;
            written.Add(file);
        }
        AtomicFile.Write(Path.Combine(folder, IndexFileName), stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", total);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (name, file) in weightMap) json.WriteString(name, file);
            json.WriteEndObject();
            json.WriteEndObject();
        });
        written.Add(IndexFileName);
        return written;
    }

    private static void CheckName(string path, string name)
    {
        if (string.IsNullOrEmpty(name)) throw new ArgumentException($"{path}: a tensor has an empty name");
        if (name == "__metadata__") throw new ArgumentException($"{path}: '__metadata__' is reserved and cannot name a tensor");
    }

    private static byte[] BuildHeader(string[] names, TensorDType[] dtypes, IReadOnlyDictionary<string, HostTensor> tensors,
        IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("__metadata__");
            if (metadata is null || !metadata.ContainsKey("format")) json.WriteString("format", "pt");
            if (metadata is not null)
                foreach (var (key, value) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) json.WriteString(key, value);
            json.WriteEndObject();
            long offset = 0;
            for (int i = 0; i < names.Length; i++)
            {
                var tensor = tensors[names[i]];
                long end = offset + (long)tensor.Data.Length * dtypes[i].SizeOf();
                json.WriteStartObject(names[i]);
                json.WriteString("dtype", dtypes[i].ToHeaderName());
                json.WriteStartArray("shape");
                foreach (var d in tensor.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(end);
                json.WriteEndArray();
                json.WriteEndObject();
                offset = end;
            }
            json.WriteEndObject();
        }
        // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
        int padded = (buffer.WrittenCount + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }
}
