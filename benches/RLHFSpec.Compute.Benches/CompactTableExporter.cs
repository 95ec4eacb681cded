using System.Globalization;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// One markdown row per case — kernel, backend, the case's own parameters, mean time, GB/s and %copy — instead of
/// the joined summary's wide table with a column for every parameter of every class. Written to
/// <c>BenchmarkDotNet.Artifacts/results/kernels-compact.md</c> and printed at the end of the run; the README's
/// table comes from it.
/// </summary>
public sealed class CompactTableExporter : ExporterBase
{
    protected override string FileExtension => "md";
    protected override string FileCaption => "compact";

    public override void ExportToLog(Summary summary, ILogger logger)
    {
        logger.WriteLine("| kernel | backend | case | mean | GB/s | %copy |");
        logger.WriteLine("|---|---|---|---:|---:|---:|");
        var gbps = new BandwidthColumn(fractionOfCopy: false);
        var copy = new BandwidthColumn(fractionOfCopy: true);
        foreach (var c in summary.BenchmarksCases)
        {
            var report = summary[c];
            double? mean = report?.ResultStatistics?.Mean;
            string backend = "", detail = "";
            var parts = new List<string>();
            foreach (var p in c.Parameters.Items)
            {
                string value = Convert.ToString(p.Value, CultureInfo.InvariantCulture) ?? "";
                if (p.Name is "Backend" or "Engine") backend = value;
                else parts.Add($"{p.Name} {value}");
            }
            detail = string.Join(", ", parts);
            string kernel = c.Descriptor.Type.Name.Replace("Benchmarks", "", StringComparison.Ordinal);
            string time = mean is null ? "failed" : Format(mean.Value);
            logger.WriteLine($"| {kernel} | {backend} | {detail} | {time} | {gbps.GetValue(summary, c)} | {copy.GetValue(summary, c)} |");
        }
    }

    private static string Format(double nanoseconds) => nanoseconds switch
    {
        >= 1e9 => $"{nanoseconds / 1e9:F2} s",
        >= 1e6 => $"{nanoseconds / 1e6:F2} ms",
        >= 1e3 => $"{nanoseconds / 1e3:F1} µs",
        _ => $"{nanoseconds:F0} ns",
    };
}
