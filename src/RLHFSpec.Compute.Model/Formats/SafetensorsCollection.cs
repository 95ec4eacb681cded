using System.Text.Json;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// One tensor lookup over a checkpoint's weights: a single <c>model.safetensors</c> or the shards named by
/// <c>model.safetensors.index.json</c> (<c>{"metadata": {"total_size": …}, "weight_map": {name: file}}</c>). Every
/// shard is opened and validated up front, and every name in the weight map must be in the shard it points to.
/// </summary>
public sealed class SafetensorsCollection : IDisposable
{
    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _owner;

    private SafetensorsCollection(List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> owner)
    {
        _files = files;
        _owner = owner;
        Names = owner.Keys.OrderBy(n => n, StringComparer.Ordinal).ToArray();
    }

    /// <summary>All tensor names, ordinal order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The opened files (one, or every shard).</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>Opens the weights of a checkpoint folder: the index when present, else <c>model.safetensors</c>.</summary>
    public static SafetensorsCollection OpenFolder(string folder)
    {
        string index = Path.Combine(folder, SafetensorsWriter.IndexFileName);
        if (File.Exists(index)) return OpenIndex(index);
        string single = Path.Combine(folder, SafetensorsWriter.SingleFileName);
        if (File.Exists(single)) return OpenFile(single);
        throw new FileNotFoundException($"{folder}: no {SafetensorsWriter.SingleFileName} or {SafetensorsWriter.IndexFileName}", single);
    }

    /// <summary>One file as a collection.</summary>
    public static SafetensorsCollection OpenFile(string path)
    {
        var file = SafetensorsFile.Open(path);
        return new SafetensorsCollection(new List<SafetensorsFile> { file }, file.Names.ToDictionary(n => n, _ => file, StringComparer.Ordinal));
    }

    /// <summary>Reads a sharded index and opens its shards (paths relative to the index's folder).</summary>
    public static SafetensorsCollection OpenIndex(string indexPath)
    {
        if (!File.Exists(indexPath)) throw new FileNotFoundException($"{indexPath}: index not found", indexPath);
        var weightMap = ReadWeightMap(indexPath);
        string folder = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var files = new List<SafetensorsFile>();
        var byName = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        var owner = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var (tensor, fileName) in weightMap)
            {
                if (!byName.TryGetValue(fileName, out var file))
                {
                    if (Path.IsPathRooted(fileName) || fileName.Contains(".."))
                        throw new InvalidDataException($"{indexPath}: weight_map entry '{tensor}' points outside the folder ('{fileName}')");
                    string shardPath = Path.Combine(folder, fileName);
                    if (!File.Exists(shardPath))
                        throw new FileNotFoundException($"{indexPath}: shard '{fileName}' (holding tensor '{tensor}') not found", shardPath);
                    file = SafetensorsFile.Open(shardPath);
                    files.Add(file);
                    byName.Add(fileName, file);
                }
                if (!file.Contains(tensor))
                    throw new InvalidDataException($"{file.FilePath}: tensor '{tensor}' is missing (listed there by {Path.GetFileName(indexPath)})");
                owner.Add(tensor, file);
            }
            return new SafetensorsCollection(files, owner);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>Whether a tensor of this name exists.</summary>
    public bool Contains(string name) => _owner.ContainsKey(name);

    /// <summary>The file holding a tensor; InvalidDataException naming the weights file and tensor when absent.</summary>
    public SafetensorsFile FileOf(string name) =>
        _owner.TryGetValue(name, out var file) ? file
            : throw new InvalidDataException($"{DescribeSource()}: tensor '{name}' is missing");

    /// <summary>The header entry of a tensor.</summary>
    public TensorInfo Get(string name) => FileOf(name).Get(name);

    /// <summary>Reads a tensor as floats.</summary>
    public float[] ReadFloats(string name) => FileOf(name).ReadFloats(name);

    /// <summary>Reads a tensor into a span of exactly its element count.</summary>
    public void ReadFloats(string name, Span<float> destination) => FileOf(name).ReadFloats(name, destination);

    /// <summary>Reads a tensor with its shape.</summary>
    public HostTensor ReadTensor(string name) => FileOf(name).ReadTensor(name);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }

    /// <summary>The file name(s) to put in a message about a tensor that is in none of them.</summary>
    private string DescribeSource() =>
        _files.Count == 1 ? _files[0].FilePath
            : Path.Combine(Path.GetDirectoryName(_files[0].FilePath) ?? "", SafetensorsWriter.IndexFileName);

    private static List<KeyValuePair<string, string>> ReadWeightMap(string indexPath)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{indexPath}: not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{indexPath}: field 'weight_map' is missing or not an object");
            var result = new List<KeyValuePair<string, string>>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(entry.Value.GetString()))
                    throw new InvalidDataException($"{indexPath}: weight_map entry for tensor '{entry.Name}' is not a file name");
                if (!seen.Add(entry.Name))
                    throw new InvalidDataException($"{indexPath}: tensor '{entry.Name}' appears twice in weight_map");
                result.Add(new(entry.Name, entry.Value.GetString()!));
            }
            if (result.Count == 0) throw new InvalidDataException($"{indexPath}: field 'weight_map' is empty");
            return result;
        }
    }
}
