using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Benches;

/// <summary>Opens each backend once per process; lists the ones present so a missing Vulkan driver skips cleanly.</summary>
public static class BenchBackends
{
    private static readonly Dictionary<string, ComputeBackend> Open = new();

    /// <summary>"cpu", plus "vulkan" when a Vulkan device exists; narrowed by RLHFSPEC_BENCH_BACKENDS=cpu,vulkan.</summary>
    public static IEnumerable<string> Available()
    {
        var wanted = Environment.GetEnvironmentVariable(BenchGrid.BackendsVariable)?
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var found = new List<string> { "cpu" };
        if (Devices.ListVulkan(out _).Count > 0) found.Add("vulkan");
        return wanted is { Length: > 0 } ? found.Where(b => wanted.Contains(b, StringComparer.OrdinalIgnoreCase)) : found;
    }

    public static ComputeBackend Get(string name)
    {
        lock (Open)
        {
            if (!Open.TryGetValue(name, out var backend))
                Open[name] = backend = Devices.Open(name);
            return backend;
        }
    }
}
