using Microsoft.ML.OnnxRuntime;

namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// OrtValues over existing host memory, without copies: the array is pinned for the OrtValue's lifetime, so
/// ONNX Runtime reads (and, for outputs, writes) the caller's buffer directly. An in-place update of the array
/// (an optimizer step) is seen by the next run of any session fed with the same OrtValue.
/// </summary>
public static class OrtTensors
{
    /// <summary>Wraps <paramref name="data"/> as a tensor of <paramref name="shape"/>; the element counts must match.</summary>
    public static OrtValue Over<T>(T[] data, params long[] shape) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(data);
        long n = shape.Aggregate(1L, (a, b) => a * b);
        if (shape.Any(d => d < 0) || n != data.Length)
            throw new ArgumentException($"tensor shape [{string.Join(", ", shape)}] holds {n} elements but the buffer has {data.Length}", nameof(shape));
        return OrtValue.CreateTensorValueFromMemory(data, shape);
    }

    /// <summary>Wraps a slice of an array (e.g. one layer's weights inside a flat parameter buffer).</summary>
    public static OrtValue Over<T>(Memory<T> data, params long[] shape) where T : unmanaged
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        if (shape.Any(d => d < 0) || n != data.Length)
            throw new ArgumentException($"tensor shape [{string.Join(", ", shape)}] holds {n} elements but the buffer has {data.Length}", nameof(shape));
        return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, data, shape);
    }
}
