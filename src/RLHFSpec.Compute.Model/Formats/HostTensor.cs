namespace RLHFSpec.Compute.Model.Formats;

/// <summary>A float tensor in host memory, row-major: what the writers take and the readers can return. The data
/// array is not copied, so weights shared with training stay one array.</summary>
public sealed class HostTensor
{
    public HostTensor(int[] shape, float[] data)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) throw new ArgumentException($"shape {TensorInfo.FormatShape(shape)} has a negative dimension", nameof(shape));
            n *= d;
        }
        if (n != data.Length)
            throw new ArgumentException($"shape {TensorInfo.FormatShape(shape)} holds {n} elements but the data has {data.Length}", nameof(data));
        Shape = shape;
        Data = data;
    }

    /// <summary>Dimensions, outermost first.</summary>
    public int[] Shape { get; }

    /// <summary>Elements in row-major order.</summary>
    public float[] Data { get; }
}
