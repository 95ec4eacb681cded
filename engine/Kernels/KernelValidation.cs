using System.Runtime.CompilerServices;

namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>
/// Argument checks shared by every backend (one file per kernel). Each failure is an
/// <see cref="ArgumentException"/> whose parameter name is the argument at fault.
/// </summary>
internal static partial class KernelValidation
{
    internal static void Require(bool condition, string argument, string message)
    {
        if (!condition) throw new ArgumentException($"{argument}: {message}", argument);
    }

    /// <summary>
    /// <see cref="Require(bool, string, string)"/> with an interpolated message that is formatted only when the check
    /// fails: the checks run on every kernel call (each layer of each step), and formatting their messages eagerly
    /// allocated about 8 KB of strings per decode step.
    /// </summary>
    internal static void Require(bool condition, string argument, [InterpolatedStringHandlerArgument("condition")] ref FailureMessage message)
    {
        if (!condition) throw new ArgumentException($"{argument}: {message.ToStringAndClear()}", argument);
    }

    internal static void RequireLength<T>(ReadOnlySpan<T> span, long expected, string argument) =>
        Require(span.Length == expected, argument, $"length {span.Length}, expected {expected}");

    internal static void RequireAtLeast<T>(DeviceBuffer<T> buffer, long elements, string argument) where T : unmanaged =>
        Require(buffer.Length >= elements, argument, $"buffer '{buffer.Name}' has {buffer.Length} elements, needs at least {elements}");

    /// <summary>offsets is [n + 1], starts at 0 and never decreases.</summary>
    internal static void RequireOffsets(ReadOnlySpan<int> offsets, int n, string argument)
    {
        RequireLength(offsets, n + 1, argument);
        Require(offsets[0] == 0, argument, $"{argument}[0] = {offsets[0]}, must be 0");
        for (int i = 0; i < n; i++)
            if (offsets[i + 1] < offsets[i])
                throw new ArgumentException($"{argument}: {argument}[{i + 1}] = {offsets[i + 1]} < {argument}[{i}] = {offsets[i]}", argument);
    }

    internal static void RequireRange(ReadOnlySpan<int> values, long lowInclusive, long highExclusive, string argument)
    {
        for (int i = 0; i < values.Length; i++)
            if (values[i] < lowInclusive || values[i] >= highExclusive)
                throw new ArgumentOutOfRangeException(argument, $"{argument}[{i}] = {values[i]} is outside [{lowInclusive}, {highExclusive})");
    }
}

/// <summary>An interpolated failure message, formatted only when its condition is false (as Debug.Assert's handler does).</summary>
[InterpolatedStringHandler]
internal ref struct FailureMessage
{
    private DefaultInterpolatedStringHandler _inner;

    public FailureMessage(int literalLength, int formattedCount, bool condition, out bool shouldAppend)
    {
        shouldAppend = !condition;
        _inner = shouldAppend ? new DefaultInterpolatedStringHandler(literalLength, formattedCount) : default;
    }

    public void AppendLiteral(string value) => _inner.AppendLiteral(value);

    public void AppendFormatted<T>(T value) => _inner.AppendFormatted(value);

    public void AppendFormatted<T>(T value, string? format) => _inner.AppendFormatted(value, format);

    public string ToStringAndClear() => _inner.ToStringAndClear();
}
