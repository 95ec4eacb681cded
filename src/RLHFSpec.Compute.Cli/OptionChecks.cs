namespace RLHFSpec.Compute.Cli;

/// <summary>
/// The checks several verbs make of their options, written once so their messages agree: one line naming the
/// option, its value and the allowed range.
/// </summary>
internal static class OptionChecks
{
    /// <summary><paramref name="value"/> must be at least <paramref name="min"/>; <paramref name="why"/> is appended to the message.</summary>
    public static void AtLeast(string option, int value, int min, string? why = null)
    {
        if (value < min) throw new ArgumentException($"{option}: {value}, must be >= {min}{(why is null ? "" : $" ({why})")}");
    }

    /// <summary>Sample counts, token limits, budgets: each at least 1.</summary>
    public static void Positive(params (string Option, int Value)[] options)
    {
        foreach (var (option, value) in options) AtLeast(option, value, 1);
    }

    /// <summary>A sampling temperature: finite and at least 0 (0 = greedy).</summary>
    public static void Temperature(double value, string option = "--temperature") => Temperature(value.ToString(System.Globalization.CultureInfo.InvariantCulture), double.IsFinite(value) && value >= 0, option);

    /// <summary>As <see cref="Temperature(double, string)"/>, printing a float option's value as the user wrote it.</summary>
    public static void Temperature(float value, string option = "--temperature") => Temperature(value.ToString(System.Globalization.CultureInfo.InvariantCulture), float.IsFinite(value) && value >= 0, option);

    private static void Temperature(string text, bool valid, string option)
    {
        if (!valid) throw new ArgumentException($"{option}: {text}, must be a finite number >= 0");
    }

    /// <summary>ONNX Runtime intra-op threads: 0 (one per core) or more.</summary>
    public static void Threads(int value, string option = "--threads") => AtLeast(option, value, 0);
}
