using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Cli;

/// <summary>Checks up front that ONNX Runtime can run the chosen execution provider here (a CUDA or DirectML
/// provider missing from this build or OS is a user error, one line naming the option).</summary>
internal static class ExecutionProviders
{
    public static void Check(string ep, string option = "--ep")
    {
        var provider = OnnxSessionOptions.ParseProvider(ep);
        try
        {
            using var options = OnnxSession.CreateSessionOptions(new OnnxSessionOptions { Provider = provider });
        }
        catch (Exception e) when (e is InvalidOperationException or PlatformNotSupportedException)
        {
            string message = e.Message;
            string prefix = $"execution provider option '{ep.Trim().ToLowerInvariant()}': ";
            if (message.StartsWith(prefix, StringComparison.Ordinal)) message = message[prefix.Length..];
            throw new ArgumentException($"{option} '{ep}': {message}");
        }
    }
}
