namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// A symbolic tensor in a <see cref="GraphBuilder"/> graph: its ONNX name, element type and shape (rank always
/// known; each dimension static or symbolic). The shape is tracked so that autodiff can undo broadcasting.
/// </summary>
public sealed class Value
{
    internal Value(GraphBuilder owner, string name, ElementType type, IReadOnlyList<Dim> shape)
    {
        Owner = owner;
        Name = name;
        Type = type;
        Shape = shape;
    }

    public string Name { get; }
    public ElementType Type { get; }
    public IReadOnlyList<Dim> Shape { get; }
    public int Rank => Shape.Count;

    internal GraphBuilder Owner { get; }

    /// <summary>The node that computes this value; null for graph inputs and initializers.</summary>
    internal GraphNode? Producer { get; set; }

    /// <summary>
    /// For a 1-D int64 value that holds a shape (the output of Shape, or a constant), the dimensions it holds;
    /// lets Expand/Reshape/ConstantOfShape over it infer their output shapes.
    /// </summary>
    internal IReadOnlyList<Dim>? ShapeContent { get; set; }

    internal bool IsFloating => Type is ElementType.Float or ElementType.Double;

    public override string ToString() => $"{Name}: {Type}[{string.Join(", ", Shape)}]";
}
