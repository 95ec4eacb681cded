namespace RLHFSpec.Compute.Model.Formats;

/// <summary>One tensor's header entry in a safetensors file. <see cref="Begin"/>/<see cref="End"/> are byte offsets
/// relative to the start of the data section (after the 8-byte length and the JSON header), as in the file.</summary>
public sealed record TensorInfo(string Name, TensorDType DType, int[] Shape, long Begin, long End)
{
    /// <summary>Number of elements: the product of <see cref="Shape"/> (1 for a scalar, shape []).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>Length of the tensor's data in bytes.</summary>
    public long ByteLength => End - Begin;

    /// <summary>The shape as "[a, b]" for messages.</summary>
    public string ShapeText => FormatShape(Shape);

    internal static string FormatShape(IReadOnlyList<int> shape) => "[" + string.Join(", ", shape) + "]";
}
