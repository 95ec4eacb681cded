namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>One ONNX node as the builder holds it before serialisation: op, inputs, outputs and attributes.</summary>
internal sealed class GraphNode
{
    public GraphNode(string opType, IReadOnlyList<Value> inputs, IReadOnlyList<Value> outputs,
        IReadOnlyDictionary<string, object> attributes)
    {
        OpType = opType;
        Inputs = inputs;
        Outputs = outputs;
        Attributes = attributes;
    }

    public string OpType { get; }
    public IReadOnlyList<Value> Inputs { get; }
    public IReadOnlyList<Value> Outputs { get; }

    /// <summary>Attribute values: long, long[], float, string or an ONNX TensorProto.</summary>
    public IReadOnlyDictionary<string, object> Attributes { get; }

    public long IntAttr(string name, long fallback) =>
        Attributes.TryGetValue(name, out var v) ? (long)v : fallback;

    public long[]? IntsAttr(string name) => Attributes.TryGetValue(name, out var v) ? (long[])v : null;
}
