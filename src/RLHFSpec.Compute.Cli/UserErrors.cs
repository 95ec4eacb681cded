using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Cli;

/// <summary>
/// Turns user errors (bad arguments, missing drivers or files) into one line on stderr and exit code 2, with no
/// stack trace; anything else is a bug and keeps its trace.
/// </summary>
internal static class UserErrors
{
    public const int ExitCode = 2;

    public static int Run(Func<int> action)
    {
        try { return action(); }
        catch (Exception e) when (e is ArgumentException or ComputeException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException or FormatException)
        {
            Console.Error.WriteLine($"rlhfspec: error: {MessageOf(e)}");
            return ExitCode;
        }
    }

    /// <summary>The message without .NET's " (Parameter 'x')" suffix: ours already name the argument.</summary>
    private static string MessageOf(Exception e)
    {
        var message = e.Message;
        if (e is ArgumentException { ParamName: { } name })
        {
            var suffix = $" (Parameter '{name}')";
            if (message.EndsWith(suffix, StringComparison.Ordinal)) message = message[..^suffix.Length];
        }
        return message;
    }
}
