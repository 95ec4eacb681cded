namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>Element types the graph builder emits. Values are ONNX <c>TensorProto.DataType</c> codes.</summary>
public enum ElementType
{
    Float = 1,
    Int64 = 7,
    Bool = 9,
    Double = 11,
}
