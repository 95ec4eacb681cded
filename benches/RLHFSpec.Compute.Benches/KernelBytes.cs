using System.Reflection;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Reports;

namespace RLHFSpec.Compute.Benches;

/// <summary>Bytes touched and measured bandwidth of a benchmark case, from its parameters and the summary.</summary>
public static class KernelBytes
{
    /// <summary>Bytes the case's method must touch, or null if its class is not an <see cref="IKernelBenchmark"/>.</summary>
    public static long? Of(BenchmarkCase benchmarkCase, out string? backend)
    {
        backend = null;
        var type = benchmarkCase.Descriptor.Type;
        if (!typeof(IKernelBenchmark).IsAssignableFrom(type)) return null;
        var instance = (IKernelBenchmark)Activator.CreateInstance(type)!;
        foreach (var p in benchmarkCase.Parameters.Items)
        {
            var property = type.GetProperty(p.Name, BindingFlags.Public | BindingFlags.Instance);
            if (property is not null) { property.SetValue(instance, p.Value); continue; }
            type.GetField(p.Name, BindingFlags.Public | BindingFlags.Instance)?.SetValue(instance, p.Value);
        }
        backend = instance.Backend;
        return instance.BytesTouched(benchmarkCase.Descriptor.WorkloadMethod.Name);
    }

    /// <summary>Measured GB/s of the case (bytes touched / mean time), or null when it did not run.</summary>
    public static double? GigabytesPerSecond(Summary summary, BenchmarkCase benchmarkCase, out string? backend)
    {
        var bytes = Of(benchmarkCase, out backend);
        var mean = summary[benchmarkCase]?.ResultStatistics?.Mean; // nanoseconds
        if (bytes is null || mean is null or <= 0) return null;
        return bytes.Value / mean.Value;
    }

    /// <summary>The best copy bandwidth measured for <paramref name="backend"/> in this run (the yardstick).</summary>
    public static double? CopyBandwidth(Summary summary, string backend)
    {
        double? best = null;
        foreach (var c in summary.BenchmarksCases)
        {
            if (c.Descriptor.Type != typeof(CopyBenchmarks)) continue;
            var g = GigabytesPerSecond(summary, c, out var b);
            if (b == backend && g is not null && (best is null || g > best)) best = g;
        }
        return best;
    }
}
