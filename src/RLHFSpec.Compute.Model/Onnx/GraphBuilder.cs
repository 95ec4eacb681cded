using Google.Protobuf;
using Onnx;

namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// Builds an ONNX graph (opset 17, default domain) from C# calls, tracking each value's element type and
/// symbolic shape. Weights are declared as graph INPUTS, not initializers, so the same host buffers feed every
/// graph (generation, training) without copies; only small constants become initializers.
/// Nodes are kept in creation order, which is a topological order — autodiff relies on that.
/// </summary>
public sealed class GraphBuilder
{
    public const int DefaultOpset = 17;

    private readonly List<Value> _inputs = new();
    private readonly List<(Value Value, string Name)> _outputs = new();
    private readonly List<TensorProto> _initializers = new();
    private readonly List<GraphNode> _nodes = new();
    private readonly HashSet<string> _names = new();
    private readonly Dictionary<string, long[]> _int64Constants = new();
    private int _counter;
    private int _invented;

    public GraphBuilder(string name = "graph", int opset = DefaultOpset)
    {
        if (opset < DefaultOpset) throw new ArgumentException($"opset must be >= {DefaultOpset}, got {opset}", nameof(opset));
        Name = name;
        Opset = opset;
    }

    public string Name { get; }
    public int Opset { get; }
    public IReadOnlyList<Value> Inputs => _inputs;
    public IReadOnlyList<string> OutputNames => _outputs.Select(o => o.Name).ToList();
    internal IReadOnlyList<GraphNode> Nodes => _nodes;
    internal IReadOnlyList<(Value Value, string Name)> Outputs => _outputs;

    // ---------------------------------------------------------------- inputs, outputs, constants

    /// <summary>Declares a graph input (activations, weights, masks, tables).</summary>
    public Value Input(string name, ElementType type, params Dim[] shape)
    {
        var v = new Value(this, Claim(name), type, shape.ToArray());
        _inputs.Add(v);
        return v;
    }

    /// <summary>Marks a value as a graph output, under its own name or (via Identity) under <paramref name="name"/>.</summary>
    public Value Output(Value value, string? name = null)
    {
        Own(value);
        if (name is not null && name != value.Name)
            value = Emit("Identity", new[] { value }, value.Type, value.Shape, attributes: null, outputName: name);
        if (_outputs.Any(o => o.Name == value.Name))
            throw new ArgumentException($"graph '{Name}': output '{value.Name}' declared twice", nameof(value));
        _outputs.Add((value, value.Name));
        return value;
    }

    /// <summary>A floating-point constant (initializer) of the given element type.</summary>
    public Value Constant(ReadOnlySpan<double> data, long[] shape, ElementType type)
    {
        if (type is not (ElementType.Float or ElementType.Double))
            throw new ArgumentException($"graph '{Name}': floating constant cannot have element type {type}", nameof(type));
        if (shape.Aggregate(1L, (a, b) => a * b) != data.Length)
            throw new ArgumentException($"graph '{Name}': constant of {data.Length} elements does not fill shape [{string.Join(", ", shape)}]", nameof(shape));
        var t = new TensorProto { Name = Fresh("const"), DataType = (int)type };
        t.Dims.AddRange(shape);
        if (type == ElementType.Float) foreach (var d in data) t.FloatData.Add((float)d);
        else foreach (var d in data) t.DoubleData.Add(d);
        return AddInitializer(t, type, shape.Select(Dim.Of).ToArray());
    }

    /// <summary>A scalar (rank 0) floating-point constant.</summary>
    public Value Scalar(double value, ElementType type) => Constant(new[] { value }, Array.Empty<long>(), type);

    /// <summary>A 1-D int64 constant (shapes, axes, indices); its content is remembered for shape inference.</summary>
    public Value Int64s(params long[] data)
    {
        var t = new TensorProto { Name = Fresh("const"), DataType = (int)ElementType.Int64 };
        t.Dims.Add(data.Length);
        t.Int64Data.AddRange(data);
        _int64Constants[t.Name] = data.ToArray();
        var v = AddInitializer(t, ElementType.Int64, new Dim[] { data.Length });
        // Only a list of plain sizes can be read as a shape (Reshape's 0 and -1 are handled by Reshape itself).
        if (data.All(d => d >= 0)) v.ShapeContent = data.Select(Dim.Of).ToArray();
        return v;
    }

    /// <summary>A rank-0 int64 constant.</summary>
    public Value Int64Scalar(long value)
    {
        var t = new TensorProto { Name = Fresh("const"), DataType = (int)ElementType.Int64 };
        t.Int64Data.Add(value);
        return AddInitializer(t, ElementType.Int64, Array.Empty<Dim>());
    }

    /// <summary>The content of an int64 constant made by this builder (axes, starts, perm); null if not one.</summary>
    internal long[]? Int64Constant(Value v)
    {
        if (v.Type != ElementType.Int64 || v.Producer is not null) return null;
        return _int64Constants.TryGetValue(v.Name, out var data) ? data : null;
    }

    private Value AddInitializer(TensorProto t, ElementType type, Dim[] shape)
    {
        _initializers.Add(t);
        return new Value(this, t.Name, type, shape);
    }

    // ---------------------------------------------------------------- elementwise

    public Value Add(Value a, Value b) => Binary("Add", a, b);
    public Value Sub(Value a, Value b) => Binary("Sub", a, b);
    public Value Mul(Value a, Value b) => Binary("Mul", a, b);
    public Value Div(Value a, Value b) => Binary("Div", a, b);
    public Value Pow(Value a, Value b) => Binary("Pow", a, b);
    public Value Min(Value a, Value b) => Binary("Min", a, b);
    public Value Max(Value a, Value b) => Binary("Max", a, b);

    public Value Neg(Value x) => Unary("Neg", x);
    public Value Sqrt(Value x) => Unary("Sqrt", x);
    public Value Reciprocal(Value x) => Unary("Reciprocal", x);
    public Value Exp(Value x) => Unary("Exp", x);
    public Value Log(Value x) => Unary("Log", x);
    public Value Sigmoid(Value x) => Unary("Sigmoid", x);
    public Value Cos(Value x) => Unary("Cos", x);
    public Value Sin(Value x) => Unary("Sin", x);
    public Value Identity(Value x) => Unary("Identity", x);

    public Value Equal(Value a, Value b) => Compare("Equal", a, b);
    public Value Less(Value a, Value b) => Compare("Less", a, b);
    public Value LessOrEqual(Value a, Value b) => Compare("LessOrEqual", a, b);
    public Value Greater(Value a, Value b) => Compare("Greater", a, b);
    public Value GreaterOrEqual(Value a, Value b) => Compare("GreaterOrEqual", a, b);
    public Value And(Value a, Value b) => Compare("And", a, b);
    public Value Not(Value x) => Emit("Not", new[] { x }, ElementType.Bool, x.Shape);

    /// <summary>silu(x) = x · sigmoid(x), built from differentiable primitives.</summary>
    public Value Silu(Value x) => Mul(x, Sigmoid(x));

    /// <summary>Clamps to [min, max]; an omitted bound is ∓∞ (kept as an input so every node input is a value).</summary>
    public Value Clip(Value x, double? min, double? max)
    {
        RequireFloating("Clip", x);
        var lo = Scalar(min ?? double.NegativeInfinity, x.Type);
        var hi = Scalar(max ?? double.PositiveInfinity, x.Type);
        return Emit("Clip", new[] { x, lo, hi }, x.Type, x.Shape);
    }

    public Value Where(Value condition, Value a, Value b)
    {
        RequireType(condition, ElementType.Bool, "Where", "condition");
        SameType("Where", a, b);
        var shape = Broadcast("Where", Broadcast("Where", condition.Shape, a.Shape), b.Shape);
        return Emit("Where", new[] { condition, a, b }, a.Type, shape);
    }

    public Value Cast(Value x, ElementType to) =>
        Emit("Cast", new[] { x }, to, x.Shape, new() { ["to"] = (long)to });

    // ---------------------------------------------------------------- linear algebra, normalisers

    /// <summary>Batched matrix product over the last two axes (both operands rank ≥ 2; batch axes broadcast).</summary>
    public Value MatMul(Value a, Value b)
    {
        SameType("MatMul", a, b);
        if (a.Rank < 2 || b.Rank < 2)
            throw new ArgumentException($"MatMul: operands must have rank >= 2, got {a} and {b}");
        var k1 = a.Shape[^1];
        var k2 = b.Shape[^2];
        if (k1.IsStatic && k2.IsStatic && k1.Size != k2.Size)
            throw new ArgumentException($"MatMul: inner dimensions differ: {a} and {b}");
        var batch = Broadcast("MatMul", a.Shape.Take(a.Rank - 2).ToArray(), b.Shape.Take(b.Rank - 2).ToArray());
        return Emit("MatMul", new[] { a, b }, a.Type, batch.Append(a.Shape[^2]).Append(b.Shape[^1]).ToArray());
    }

    public Value Softmax(Value x, int axis = -1) =>
        Emit("Softmax", new[] { x }, x.Type, x.Shape, new() { ["axis"] = (long)Axis(x, axis, "Softmax") });

    public Value LogSoftmax(Value x, int axis = -1) =>
        Emit("LogSoftmax", new[] { x }, x.Type, x.Shape, new() { ["axis"] = (long)Axis(x, axis, "LogSoftmax") });

    public Value ReduceSum(Value x, int[] axes, bool keepDims = true) => Reduce("ReduceSum", x, axes, keepDims);
    public Value ReduceMean(Value x, int[] axes, bool keepDims = true) => Reduce("ReduceMean", x, axes, keepDims);
    public Value ReduceMax(Value x, int[] axes, bool keepDims = true) => Reduce("ReduceMax", x, axes, keepDims);

    // ---------------------------------------------------------------- shapes

    /// <summary>The runtime shape of <paramref name="x"/> as a 1-D int64 tensor.</summary>
    public Value ShapeOf(Value x)
    {
        var v = Emit("Shape", new[] { x }, ElementType.Int64, new Dim[] { x.Rank });
        v.ShapeContent = x.Shape;
        return v;
    }

    /// <summary>The number of elements of <paramref name="x"/> as an int64 scalar.</summary>
    public Value Size(Value x) => Emit("Size", new[] { x }, ElementType.Int64, Array.Empty<Dim>());

    /// <summary>Reshape to a constant shape (ONNX semantics: 0 copies the input dim, -1 is inferred).</summary>
    public Value Reshape(Value x, params long[] shape) =>
        Emit("Reshape", new[] { x, Int64s(shape) }, x.Type, ReshapeDims(x, shape));

    private Dim[] ReshapeDims(Value x, long[] shape)
    {
        var dims = new Dim[shape.Length];
        int inferAt = -1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 0)
            {
                if (i >= x.Rank) throw new ArgumentException($"Reshape: 0 at axis {i} but {x} has rank {x.Rank}");
                dims[i] = x.Shape[i];
            }
            else if (shape[i] == -1)
            {
                if (inferAt >= 0) throw new ArgumentException($"Reshape: more than one -1 in [{string.Join(", ", shape)}]");
                inferAt = i;
            }
            else if (shape[i] > 0) dims[i] = shape[i];
            else throw new ArgumentException($"Reshape: invalid size {shape[i]} in [{string.Join(", ", shape)}]");
        }
        if (inferAt >= 0)
        {
            // -1 = (product of x's dims) / (product of the others): cancel symbols present on both sides.
            var symbols = x.Shape.Where(d => !d.IsStatic).Select(d => d.Symbol!).ToList();
            long numerator = x.Shape.Where(d => d.IsStatic).Aggregate(1L, (p, d) => p * d.Size);
            long denominator = 1;
            bool solvable = true;
            foreach (var d in dims.Where((_, i) => i != inferAt))
                if (d.IsStatic) denominator *= d.Size;
                else solvable &= symbols.Remove(d.Symbol!);
            if (solvable && denominator > 0 && numerator % denominator == 0)
            {
                long quotient = numerator / denominator;
                dims[inferAt] = symbols.Count == 0 ? Dim.Of(quotient)
                    : symbols.Count == 1 && quotient == 1 ? Dim.Sym(symbols[0]) : Invent();
            }
            else dims[inferAt] = Invent();
        }
        return dims;
    }

    /// <summary>Reshape to a runtime shape (e.g. <see cref="ShapeOf"/> of another value).</summary>
    public Value Reshape(Value x, Value shape)
    {
        RequireType(shape, ElementType.Int64, "Reshape", "shape");
        var constant = Int64Constant(shape);
        var dims = constant is not null ? ReshapeDims(x, constant)
            : shape.ShapeContent?.ToArray() ?? InventMany(StaticLength(shape, "Reshape"));
        return Emit("Reshape", new[] { x, shape }, x.Type, dims);
    }

    public Value Transpose(Value x, params int[] perm)
    {
        if (perm.Length != x.Rank || perm.OrderBy(p => p).Where((p, i) => p != i).Any())
            throw new ArgumentException($"Transpose: perm [{string.Join(", ", perm)}] is not a permutation of {x}'s {x.Rank} axes");
        return Emit("Transpose", new[] { x }, x.Type, perm.Select(p => x.Shape[p]).ToArray(),
            new() { ["perm"] = perm.Select(p => (long)p).ToArray() });
    }

    public Value Unsqueeze(Value x, params int[] axes)
    {
        int outRank = x.Rank + axes.Length;
        var norm = axes.Select(a => a < 0 ? a + outRank : a).ToArray();
        if (norm.Any(a => a < 0 || a >= outRank) || norm.Distinct().Count() != norm.Length)
            throw new ArgumentException($"Unsqueeze: bad axes [{string.Join(", ", axes)}] for {x}");
        var dims = new List<Dim>();
        int src = 0;
        for (int i = 0; i < outRank; i++) dims.Add(norm.Contains(i) ? Dim.Of(1) : x.Shape[src++]);
        return Emit("Unsqueeze", new[] { x, Int64s(norm.Select(a => (long)a).ToArray()) }, x.Type, dims);
    }

    public Value Squeeze(Value x, params int[] axes)
    {
        var norm = axes.Select(a => Axis(x, a, "Squeeze")).ToArray();
        foreach (var a in norm)
            if (!(x.Shape[a].IsStatic && x.Shape[a].Size == 1))
                throw new ArgumentException($"Squeeze: axis {a} of {x} is not a static 1");
        var dims = x.Shape.Where((_, i) => !norm.Contains(i)).ToArray();
        return Emit("Squeeze", new[] { x, Int64s(norm.Select(a => (long)a).ToArray()) }, x.Type, dims);
    }

    /// <summary>Slice with step 1 along the given axes (ONNX semantics for negative and out-of-range bounds).</summary>
    public Value Slice(Value x, long[] starts, long[] ends, int[] axes)
    {
        if (starts.Length != ends.Length || starts.Length != axes.Length)
            throw new ArgumentException("Slice: starts, ends and axes must have the same length");
        var norm = axes.Select(a => Axis(x, a, "Slice")).ToArray();
        var dims = x.Shape.ToArray();
        for (int i = 0; i < norm.Length; i++)
        {
            var d = x.Shape[norm[i]];
            if (d.IsStatic)
            {
                long s = Clamp(starts[i] < 0 ? starts[i] + d.Size : starts[i], d.Size);
                long e = Clamp(ends[i] < 0 ? ends[i] + d.Size : ends[i], d.Size);
                dims[norm[i]] = Math.Max(0, e - s);
            }
            else dims[norm[i]] = Invent();
        }
        var result = Emit("Slice", new[] { x, Int64s(starts), Int64s(ends), Int64s(norm.Select(a => (long)a).ToArray()) }, x.Type, dims);
        // Shape arithmetic: a slice of a known shape vector is a known shape vector.
        if (x.ShapeContent is { } content && x.Rank == 1)
        {
            long n = content.Count;
            long s = Clamp(starts[0] < 0 ? starts[0] + n : starts[0], n);
            long e = Clamp(ends[0] < 0 ? ends[0] + n : ends[0], n);
            result.ShapeContent = content.Skip((int)s).Take((int)Math.Max(0, e - s)).ToArray();
        }
        return result;

        static long Clamp(long v, long size) => Math.Clamp(v, 0, size);
    }

    public Value Concat(int axis, params Value[] xs)
    {
        if (xs.Length == 0) throw new ArgumentException("Concat: no inputs");
        foreach (var x in xs.Skip(1))
        {
            SameType("Concat", xs[0], x);
            if (x.Rank != xs[0].Rank) throw new ArgumentException($"Concat: ranks differ: {xs[0]} and {x}");
        }
        int ax = Axis(xs[0], axis, "Concat");
        var dims = xs[0].Shape.ToArray();
        dims[ax] = xs.All(x => x.Shape[ax].IsStatic) ? Dim.Of(xs.Sum(x => x.Shape[ax].Size)) : Invent();
        var result = Emit("Concat", xs, xs[0].Type, dims, new() { ["axis"] = (long)ax });
        if (xs[0].Rank == 1 && xs.All(x => x.ShapeContent is not null))
            result.ShapeContent = xs.SelectMany(x => x.ShapeContent!).ToArray();
        return result;
    }

    /// <summary>Splits along <paramref name="axis"/> into pieces whose sizes are given at runtime (1-D int64).</summary>
    public Value[] Split(Value x, int axis, Value sizes, IReadOnlyList<IReadOnlyList<Dim>> outShapes)
    {
        int ax = Axis(x, axis, "Split");
        Own(x);
        Own(sizes);
        var outs = outShapes.Select(s => new Value(this, Fresh("Split"), x.Type, s)).ToArray();
        var node = new GraphNode("Split", new[] { x, sizes }, outs, new Dictionary<string, object> { ["axis"] = (long)ax });
        foreach (var o in outs) o.Producer = node;
        _nodes.Add(node);
        return outs;
    }

    /// <summary>Broadcasts <paramref name="x"/> to a runtime shape (1-D int64, e.g. <see cref="ShapeOf"/>).</summary>
    public Value Expand(Value x, Value shape)
    {
        RequireType(shape, ElementType.Int64, "Expand", "shape");
        var target = shape.ShapeContent ?? InventMany(StaticLength(shape, "Expand"));
        return Emit("Expand", new[] { x, shape }, x.Type, Broadcast("Expand", x.Shape, target));
    }

    /// <summary>A tensor of the runtime shape <paramref name="shape"/> filled with <paramref name="value"/>.</summary>
    public Value ConstantOfShape(Value shape, double value, ElementType type)
    {
        RequireType(shape, ElementType.Int64, "ConstantOfShape", "shape");
        var t = new TensorProto { DataType = (int)type };
        t.Dims.Add(1);
        switch (type)
        {
            case ElementType.Float: t.FloatData.Add((float)value); break;
            case ElementType.Double: t.DoubleData.Add(value); break;
            case ElementType.Int64: t.Int64Data.Add((long)value); break;
            default: throw new ArgumentException($"ConstantOfShape: unsupported element type {type}");
        }
        var dims = shape.ShapeContent ?? InventMany(StaticLength(shape, "ConstantOfShape"));
        return Emit("ConstantOfShape", new[] { shape }, type, dims, new() { ["value"] = t });
    }

    // ---------------------------------------------------------------- indexing

    /// <summary>Gather along <paramref name="axis"/> (embedding lookup: data [V, H], indices [B, T] → [B, T, H]).</summary>
    public Value Gather(Value data, Value indices, int axis = 0)
    {
        RequireType(indices, ElementType.Int64, "Gather", "indices");
        int ax = Axis(data, axis, "Gather");
        var dims = data.Shape.Take(ax).Concat(indices.Shape).Concat(data.Shape.Skip(ax + 1)).ToArray();
        return Emit("Gather", new[] { data, indices }, data.Type, dims, new() { ["axis"] = (long)ax });
    }

    /// <summary>GatherElements (log-prob of target tokens: logp [B, T, V], targets [B, T, 1] → [B, T, 1]).</summary>
    public Value GatherElements(Value data, Value indices, int axis)
    {
        RequireType(indices, ElementType.Int64, "GatherElements", "indices");
        if (indices.Rank != data.Rank) throw new ArgumentException($"GatherElements: ranks differ: {data} and {indices}");
        int ax = Axis(data, axis, "GatherElements");
        return Emit("GatherElements", new[] { data, indices }, data.Type, indices.Shape, new() { ["axis"] = (long)ax });
    }

    /// <summary>ScatterElements with add reduction (gradient of GatherElements).</summary>
    public Value ScatterElementsAdd(Value data, Value indices, Value updates, int axis)
    {
        int ax = Axis(data, axis, "ScatterElements");
        return Emit("ScatterElements", new[] { data, indices, updates }, data.Type, data.Shape,
            new() { ["axis"] = (long)ax, ["reduction"] = "add" });
    }

    /// <summary>ScatterND with add reduction (gradient of Gather).</summary>
    public Value ScatterNDAdd(Value data, Value indices, Value updates) =>
        Emit("ScatterND", new[] { data, indices, updates }, data.Type, data.Shape, new() { ["reduction"] = "add" });

    /// <summary>Zero padding; <paramref name="pads"/> is a runtime 1-D int64 [begin_0.., end_0..].</summary>
    public Value Pad(Value x, Value pads, IReadOnlyList<Dim> outShape) =>
        Emit("Pad", new[] { x, pads }, x.Type, outShape);

    // ---------------------------------------------------------------- serialisation

    public ModelProto ToModel()
    {
        if (_outputs.Count == 0) throw new InvalidOperationException($"graph '{Name}' has no outputs");
        var g = new GraphProto { Name = Name };
        foreach (var v in _inputs) g.Input.Add(ValueInfo(v, keepSymbols: true));
        foreach (var (v, _) in _outputs) g.Output.Add(ValueInfo(v, keepSymbols: false));
        g.Initializer.AddRange(_initializers);
        int i = 0;
        foreach (var n in _nodes)
        {
            var p = new NodeProto { OpType = n.OpType, Name = $"{n.OpType}_{i++}" };
            p.Input.AddRange(n.Inputs.Select(v => v.Name));
            p.Output.AddRange(n.Outputs.Select(v => v.Name));
            foreach (var (k, val) in n.Attributes) p.Attribute.Add(Attribute(k, val));
            g.Node.Add(p);
        }
        var m = new ModelProto { IrVersion = 8, ProducerName = "RLHFSpec.Compute", Graph = g };
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        return m;
    }

    public byte[] ToBytes() => ToModel().ToByteArray();

    /// <summary>Writes the model to an .onnx file (for inspection, e.g. in Netron) via a temporary file and rename.</summary>
    public void Save(string path)
    {
        var full = Path.GetFullPath(path);
        var tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(tmp, ToBytes());
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    private static ValueInfoProto ValueInfo(Value v, bool keepSymbols)
    {
        var shape = new TensorShapeProto();
        foreach (var d in v.Shape)
        {
            var dim = new TensorShapeProto.Types.Dimension();
            if (d.IsStatic) dim.DimValue = d.Size;
            // Invented symbols are builder guesses; declaring them on outputs could contradict ORT's inference.
            else if (keepSymbols && !d.IsInvented) dim.DimParam = d.Symbol;
            shape.Dim.Add(dim);
        }
        return new ValueInfoProto
        {
            Name = v.Name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)v.Type, Shape = shape } },
        };
    }

    private static AttributeProto Attribute(string name, object value) => value switch
    {
        long l => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = l },
        float f => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = f },
        string s => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(s) },
        long[] ls => WithInts(name, ls),
        TensorProto t => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = t },
        _ => throw new InvalidOperationException($"attribute '{name}' has unsupported type {value.GetType()}"),
    };

    private static AttributeProto WithInts(string name, long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    // ---------------------------------------------------------------- internals

    private Value Unary(string op, Value x)
    {
        RequireFloating(op, x);
        return Emit(op, new[] { x }, x.Type, x.Shape);
    }

    private Value Binary(string op, Value a, Value b)
    {
        SameType(op, a, b);
        return Emit(op, new[] { a, b }, a.Type, Broadcast(op, a.Shape, b.Shape));
    }

    private Value Compare(string op, Value a, Value b)
    {
        SameType(op, a, b);
        return Emit(op, new[] { a, b }, ElementType.Bool, Broadcast(op, a.Shape, b.Shape));
    }

    private Value Reduce(string op, Value x, int[] axes, bool keepDims)
    {
        if (axes.Length == 0) throw new ArgumentException($"{op}: at least one axis is required (no implicit reduce-all)");
        var norm = axes.Select(a => Axis(x, a, op)).Distinct().OrderBy(a => a).ToArray();
        var dims = new List<Dim>();
        for (int i = 0; i < x.Rank; i++)
            if (!norm.Contains(i)) dims.Add(x.Shape[i]);
            else if (keepDims) dims.Add(1);
        var attrs = new Dictionary<string, object> { ["keepdims"] = keepDims ? 1L : 0L };
        // ReduceSum takes axes as an input from opset 13; ReduceMean/Max from opset 18.
        if (op == "ReduceSum" || Opset >= 18)
            return Emit(op, new[] { x, Int64s(norm.Select(a => (long)a).ToArray()) }, x.Type, dims, attrs);
        attrs["axes"] = norm.Select(a => (long)a).ToArray();
        return Emit(op, new[] { x }, x.Type, dims, attrs);
    }

    internal Value Emit(string op, IReadOnlyList<Value> inputs, ElementType type, IReadOnlyList<Dim> shape,
        Dictionary<string, object>? attributes = null, string? outputName = null)
    {
        foreach (var i in inputs) Own(i);
        var output = new Value(this, outputName is null ? Fresh(op) : Claim(outputName), type, shape.ToArray());
        var node = new GraphNode(op, inputs.ToArray(), new[] { output }, attributes ?? new Dictionary<string, object>());
        output.Producer = node;
        _nodes.Add(node);
        return output;
    }

    /// <summary>A generated name that no input, output or earlier value uses.</summary>
    private string Fresh(string prefix)
    {
        string name;
        do name = $"{prefix}_{_counter++}";
        while (_names.Contains(name));
        return Claim(name);
    }

    private string Claim(string name)
    {
        if (!_names.Add(name)) throw new ArgumentException($"graph '{Name}': name '{name}' is already used", nameof(name));
        return name;
    }

    private void Own(Value v)
    {
        if (!ReferenceEquals(v.Owner, this))
            throw new ArgumentException($"value '{v.Name}' belongs to another graph than '{Name}'");
    }

    internal Dim Invent() => Dim.Sym($"?{_invented++}");
    private Dim[] InventMany(long n) => Enumerable.Range(0, (int)n).Select(_ => Invent()).ToArray();

    private static long StaticLength(Value shape, string op)
    {
        if (shape.Rank != 1 || !shape.Shape[0].IsStatic)
            throw new ArgumentException($"{op}: shape operand {shape} must be 1-D with a static length");
        return shape.Shape[0].Size;
    }

    internal static int Axis(Value x, int axis, string op)
    {
        int a = axis < 0 ? axis + x.Rank : axis;
        if (a < 0 || a >= x.Rank) throw new ArgumentException($"{op}: axis {axis} out of range for {x}");
        return a;
    }

    /// <summary>
    /// NumPy broadcasting over symbolic shapes. Rule: only a STATIC 1 broadcasts; a symbolic dim is assumed to
    /// be > 1 at runtime, so autodiff can tell statically which axes were broadcast.
    /// </summary>
    internal static Dim[] Broadcast(string op, IReadOnlyList<Dim> a, IReadOnlyList<Dim> b)
    {
        int r = Math.Max(a.Count, b.Count);
        var dims = new Dim[r];
        for (int i = 0; i < r; i++)
        {
            int ia = i - (r - a.Count), ib = i - (r - b.Count);
            if (ia < 0) { dims[i] = b[ib]; continue; }
            if (ib < 0) { dims[i] = a[ia]; continue; }
            Dim da = a[ia], db = b[ib];
            if (da == db) dims[i] = da;
            else if (da.IsStatic && da.Size == 1) dims[i] = db;
            else if (db.IsStatic && db.Size == 1) dims[i] = da;
            else if (da.IsStatic && db.IsStatic)
                throw new ArgumentException($"{op}: shapes [{string.Join(", ", a)}] and [{string.Join(", ", b)}] do not broadcast");
            // Static beats symbolic, a named symbol beats an invented one; otherwise assume they are equal.
            else if (da.IsStatic || (!db.IsStatic && db.IsInvented)) dims[i] = da;
            else dims[i] = db;
        }
        return dims;
    }

    private static void SameType(string op, Value a, Value b)
    {
        if (a.Type != b.Type) throw new ArgumentException($"{op}: element types differ: {a} and {b}");
    }

    private static void RequireFloating(string op, Value x)
    {
        if (!x.IsFloating) throw new ArgumentException($"{op}: {x} must be float or double");
    }

    private static void RequireType(Value x, ElementType type, string op, string role)
    {
        if (x.Type != type) throw new ArgumentException($"{op}: {role} {x} must be {type}");
    }
}
