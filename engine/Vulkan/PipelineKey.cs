using System.Runtime.CompilerServices;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// A compute pipeline's identity: its shader and the values of its specialization constants (at most
/// <see cref="MaxConstants"/>), held inline and compared by value, so looking a pipeline up on every dispatch
/// builds no string and allocates nothing.
/// </summary>
internal readonly struct PipelineKey : IEquatable<PipelineKey>
{
    /// <summary>Most specialization constants a shader takes (kv_move has 7).</summary>
    public const int MaxConstants = 8;

    [InlineArray(MaxConstants)]
    private struct Constants
    {
        private int _first;
    }

    private readonly Constants _constants;

    public PipelineKey(string shader, ReadOnlySpan<int> constants)
    {
        if (constants.Length > MaxConstants)
            throw new ComputeException($"shader '{shader}': {constants.Length} specialization constants, at most {MaxConstants} are supported");
        Shader = shader;
        Count = constants.Length;
        constants.CopyTo(_constants);
    }

    /// <summary>The shader's name (its SPIR-V resource).</summary>
    public string Shader { get; }

    /// <summary>Number of specialization constants.</summary>
    public int Count { get; }

    public bool Equals(PipelineKey other)
    {
        if (Count != other.Count || !string.Equals(Shader, other.Shader, StringComparison.Ordinal)) return false;
        ReadOnlySpan<int> mine = _constants, theirs = other._constants;
        return mine[..Count].SequenceEqual(theirs[..Count]);
    }

    public override bool Equals(object? obj) => obj is PipelineKey other && Equals(other);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Shader, StringComparer.Ordinal);
        ReadOnlySpan<int> values = _constants;
        foreach (int value in values[..Count]) hash.Add(value);
        return hash.ToHashCode();
    }

    public override string ToString()
    {
        ReadOnlySpan<int> values = _constants;
        return $"{Shader}[{string.Join(",", values[..Count].ToArray())}]";
    }
}
