using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// One joined summary (so %copy can find the copy yardstick of the same run), in-process (the Vulkan device and
/// big buffers are set up once per case, not per process), GB/s and %copy columns, a GitHub-markdown table.
/// </summary>
public static class BenchConfig
{
    public static IConfig Create(bool full)
    {
        var job = Job.Default.WithToolchain(InProcessEmitToolchain.Instance);
        job = full
            ? job.WithWarmupCount(3).WithIterationCount(10)
            : job.WithWarmupCount(1).WithIterationCount(5).WithIterationTime(TimeInterval.FromMilliseconds(150));
        return ManualConfig.CreateEmpty()
            .AddJob(job.WithId(full ? "full" : "quick"))
            .AddLogger(ConsoleLogger.Default)
            .AddColumnProvider(DefaultColumnProviders.Instance)
            .AddColumn(new BandwidthColumn(fractionOfCopy: false), new BandwidthColumn(fractionOfCopy: true))
            .HideColumns(Column.Error, Column.Job, "InvocationCount", "UnrollFactor", "Toolchain", "IterationTime", "IterationCount", "WarmupCount")
            .AddExporter(MarkdownExporter.GitHub, new CompactTableExporter())
            .WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(20))
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);
    }
}
