using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// "GB/s": bytes the kernel must touch over its mean time; "%copy": that as a fraction of the best copy
/// bandwidth the same backend reached in the same run (CopyBenchmarks). A verify case at ≥ 50 %copy is within
/// 2× of one pass over its logits; kv_move targets ≥ 70 %copy.
/// </summary>
public sealed class BandwidthColumn(bool fractionOfCopy) : IColumn
{
    public string Id => fractionOfCopy ? "rlhfspec-copy-fraction" : "rlhfspec-gbps";
    public string ColumnName => fractionOfCopy ? "%copy" : "GB/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => fractionOfCopy ? 1 : 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => fractionOfCopy
        ? "GB/s as a percentage of the best copy bandwidth measured on the same backend in this run"
        : "Bytes the kernel must read and write, divided by the mean time (10^9 bytes per second)";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var gbps = KernelBytes.GigabytesPerSecond(summary, benchmarkCase, out var backend);
        if (gbps is null || backend is null) return "-";
        if (!fractionOfCopy) return gbps.Value.ToString("0.00");
        var copy = KernelBytes.CopyBandwidth(summary, backend);
        return copy is null ? "-" : (100 * gbps.Value / copy.Value).ToString("0") + " %";
    }

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public override string ToString() => ColumnName;
}
