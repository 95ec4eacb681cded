using BenchmarkDotNet.Running;
using RLHFSpec.Compute.Benches;

// Usage: dotnet run -c Release --project benches/RLHFSpec.Compute.Benches -- [--quick|--full] [--backends cpu,vulkan]
//        [BenchmarkDotNet options, e.g. --filter '*Verify*']. Without --filter every kernel runs.
var rest = new List<string>();
bool full = false;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--quick": full = false; break;
        case "--full": full = true; break;
        case "--backends" when i + 1 < args.Length:
            Environment.SetEnvironmentVariable(BenchGrid.BackendsVariable, args[++i]);
            break;
        default: rest.Add(args[i]); break;
    }
}
Environment.SetEnvironmentVariable(BenchGrid.GridVariable, full ? "full" : "quick");
if (!rest.Any(a => a.StartsWith("--filter", StringComparison.Ordinal))) rest.AddRange(new[] { "--filter", "*" });
var summaries = BenchmarkSwitcher.FromAssembly(typeof(BenchConfig).Assembly).Run(rest.ToArray(), BenchConfig.Create(full));
foreach (var summary in summaries)
{
    Console.WriteLine();
    new CompactTableExporter().ExportToLog(summary, BenchmarkDotNet.Loggers.ConsoleLogger.Default);
}
