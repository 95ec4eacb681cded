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
            Console.Error.WriteLine($"rlhfspec: error: {OneLine(MessageOf(e))}");
            return ExitCode;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // What the file system refused (a full disk, a read-only mount, missing permission) is the user's to fix;
            // outputs are checked up front, so these are the rare late cases, still one line.
            Console.Error.WriteLine($"rlhfspec: error: {OneLine(e.Message)}");
            return ExitCode;
        }
    }

    /// <summary>A message on one line (parsers and the system sometimes add line breaks).</summary>
    private static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

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
