using System.Runtime.CompilerServices;
using Microsoft.ML.OnnxRuntime;

namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// Named float tensors laid out in ONE pinned host array: the single copy of a model's weights (or of its
/// gradients) that generation graphs, training graphs, the optimizer and the engine all use. Each tensor is
/// available as a span/memory slice, as a stable native address (the array is pinned, so the engine can map it),
/// and as an <see cref="OrtValue"/> view created once and reused by every session — an in-place update (AdamW)
/// is seen by the next run of any graph, with no copy and no re-binding.
/// </summary>
public sealed class TensorArena : IDisposable
{
    private readonly float[] _data;
    private readonly Dictionary<string, (int Offset, long[] Shape)> _tensors = new();
    private readonly List<string> _order = new();
    private readonly Dictionary<string, OrtValue> _values = new();
    private bool _disposed;

    /// <summary>Lays out the given tensors back to back (in order) in one pinned array, zero-filled.</summary>
    public TensorArena(IEnumerable<(string Name, long[] Shape)> tensors)
    {
        long total = 0;
        foreach (var (name, shape) in tensors)
        {
            ArgumentException.ThrowIfNullOrEmpty(name);
            if (shape.Any(d => d < 0)) throw new ArgumentException($"tensor arena: '{name}' has a negative dimension in [{string.Join(", ", shape)}]", nameof(tensors));
            if (_tensors.ContainsKey(name)) throw new ArgumentException($"tensor arena: tensor '{name}' declared twice", nameof(tensors));
            _tensors[name] = ((int)total, shape.ToArray());
            _order.Add(name);
            total += shape.Aggregate(1L, (a, b) => a * b);
            if (total > Array.MaxLength) throw new ArgumentException($"tensor arena: {total} elements exceed one array (at '{name}')", nameof(tensors));
        }
        _data = GC.AllocateArray<float>((int)total, pinned: true);
    }

    public IReadOnlyList<string> Names => _order;
    public long Length => _data.Length;

    public long[] Shape(string name) => Entry(name).Shape.ToArray();

    public Memory<float> Memory(string name)
    {
        var (offset, shape) = Entry(name);
        return _data.AsMemory(offset, (int)shape.Aggregate(1L, (a, b) => a * b));
    }

    public Span<float> Span(string name) => Memory(name).Span;

    /// <summary>The whole arena (all tensors back to back), e.g. for one optimizer parameter or a checkpoint write.</summary>
    public Memory<float> All => _data;

    /// <summary>Native address of the tensor's first element; valid for the arena's lifetime (pinned array).</summary>
    public unsafe nint Address(string name)
    {
        var (offset, _) = Entry(name);
        return (nint)Unsafe.AsPointer(ref _data[offset]);
    }

    /// <summary>The tensor as an OrtValue over the arena's memory (created on first use, then reused).</summary>
    public OrtValue Value(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_values.TryGetValue(name, out var v))
        {
            var (_, shape) = Entry(name);
            v = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Memory(name), shape);
            _values[name] = v;
        }
        return v;
    }

    private (int Offset, long[] Shape) Entry(string name) =>
        _tensors.TryGetValue(name, out var e) ? e : throw new ArgumentException($"tensor arena: no tensor '{name}'", nameof(name));

    /// <summary>
    /// Every tensor as an ONNX Runtime value over the arena, keyed by <paramref name="prefix"/> + its name: the weights
    /// of a graph's inputs (no prefix), or the gradient outputs of a training graph (prefix <c>grad_</c>). A fresh
    /// dictionary the caller may add its other inputs or outputs to.
    /// </summary>
    public Dictionary<string, OrtValue> Values(string prefix = "")
    {
        var values = new Dictionary<string, OrtValue>(_order.Count + 8);
        foreach (var n in _order) values[prefix + n] = Value(n);
        return values;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var v in _values.Values) v.Dispose();
        _values.Clear();
    }
}
