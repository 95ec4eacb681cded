using System.CommandLine;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec bench model</c>: the transformer runtime's speed on this machine (prefill, decode, tree verify,
/// dense part vs bare MatMul, training step), measured side by side in one run and printed as a table (and as
/// Markdown with <c>--markdown FILE</c>).
/// </summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks measured on this machine (speed goes here, not in tests)");
        bench.Subcommands.Add(ModelBench());
        bench.Subcommands.Add(GenerationBench.Create());
        bench.Subcommands.Add(TrainBench.Create());
        bench.Subcommands.Add(PeerBench.Create());
        bench.Subcommands.Add(AgreementBench.Create());
        bench.Subcommands.Add(DenseBench.Create());
        return bench;
    }

    private static Command ModelBench()
    {
        var model = new Option<string?>("--model") { Description = "Model folder whose shape is timed (weights are re-initialised randomly); default: the embedded policy" };
        var device = CommonOptions.Device();
        var ep = CommonOptions.Ep();
        var threads = CommonOptions.Threads();
        var quick = new Option<bool>("--quick") { Description = "Fewer sizes (batch 1, 16, 256; trees 4, 16, 64)" };
        var dense = CommonOptions.Dense();
        var kvDType = CommonOptions.KvDType();
        var markdown = CommonOptions.Markdown();
        var regime = new Option<bool>("--regime")
        {
            Description = $"Only the batch-1 regime check: decode of 1 token vs verify of {RegimeVerifyTokens} tokens (a tree), and their ratio (bandwidth-bound when <= {BandwidthBoundRatio}x)",
        };
        var set = CommonOptions.Set();
        var draft = new Option<string?>("--draft") { Description = "Draft model folder whose decode step is compared with the target's (default: the set's draft-small; with --model, none)" };
        var command = new Command("model", "Prefill, decode and tree-verify tokens/s; dense part vs bare MatMul; training tokens/s") { model, set, draft, device, ep, threads, quick, dense, kvDType, markdown, regime };
        command.SetAction(r => RunModel(r.GetValue(model), r.GetValue(device)!, r.GetValue(ep)!, r.GetValue(threads), r.GetValue(quick), r.GetValue(dense)!, r.GetValue(markdown), r.GetValue(regime), r.GetValue(set), r.GetValue(kvDType)!, r.GetValue(draft)));
        return command;
    }

    private const string DraftDecode = "draft decode";

    /// <summary>Tokens per sample of the regime check's verify step (the issue's definition: 16).</summary>
    internal const int RegimeVerifyTokens = 16;

    /// <summary>
    /// A model is in the bandwidth-bound regime at batch 1 when verifying <see cref="RegimeVerifyTokens"/> tokens costs
    /// at most this many decode steps (reading the weights dominates, so drafted tokens are nearly free to verify).
    /// </summary>
    internal const double BandwidthBoundRatio = 1.5;

    private static int RunModel(string? modelFolder, string deviceName, string ep, int threads, bool quick, string denseName, string? markdown, bool regime = false, string? set = null, string kvDTypeName = "f32", string? draft = null)
    {
        if (threads < 0) throw new ArgumentException($"--threads: {threads}, must be >= 0");
        var dense = CommonOptions.ParseDense(denseName);
        var kvDType = CommonOptions.ParseKvDType(kvDTypeName);
        ExecutionProviders.Check(ep);
        OutputPaths.Check(("--markdown", markdown));
        var session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(ep), IntraOpThreads = threads };
        // A set (or the default one) brings its small draft, whose decode step is compared with the target's.
        var (policy, draftFolder) = ModelFolders.Resolve(modelFolder, draft, draftOptional: modelFolder is not null, set: set);
        var config = ModelConfig.Load(Path.Combine(policy, ModelConfig.FileName));
        using var weights = TransformerWeights.Random(config, seed: 1);
        using var backend = Devices.Open(deviceName);
        var bench = new ModelBenchmark(weights, backend, session) { MinSeconds = quick ? 0.2 : 0.5, Executor = dense, KvDType = kvDType };
        int[] batches = quick ? [1, 16, 256] : [1, 4, 16, 64, 256];
        int[] nodes = quick ? [4, 16, 64] : [2, 4, 8, 16, 32, 64];
        var cases = new List<Func<ModelBenchmarkRow>>();
        if (regime)
        {
            cases.Add(() => bench.Step(1, 1, 128));
            cases.Add(() => bench.Step(1, RegimeVerifyTokens, 128));
        }
        else
        {
            foreach (int b in batches) cases.Add(() => bench.Prefill(b, 64));
            foreach (int b in batches) cases.Add(() => bench.Step(b, 1, 128));
            // The issue's long-context case: attention's time against reading its K/V once at copy bandwidth.
            if (!quick) cases.Add(() => bench.Step(256, 1, 512));
            foreach (int n in nodes) cases.Add(() => bench.Step(16, n, 128));
            foreach (int t in quick ? new[] { 1, 64, 1024 } : new[] { 1, 16, 64, 256, 1024 }) cases.Add(() => bench.Dense(t));
            foreach (int b in quick ? new[] { 8 } : new[] { 4, 16 }) cases.Add(() => bench.Train(b, 64));
        }

        // The draft (the set's, or --draft): its decode step against the target's at batch 1 and 16 (also with --regime:
        // the issue bounds a drafted token's cost at batch 1 against a target step).
        using var draftWeights = draftFolder is not null && !quick ? TransformerWeights.Random(ModelConfig.Load(Path.Combine(draftFolder, ModelConfig.FileName)), seed: 2) : null;
        if (draftWeights is not null)
        {
            var draftBench = new ModelBenchmark(draftWeights, backend, session) { MinSeconds = bench.MinSeconds, Executor = dense, KvDType = kvDType };
            foreach (int b in new[] { 1, 16 }) cases.Add(() => draftBench.Step(b, 1, 128) with { Case = DraftDecode });
        }
        double copy = regime ? double.NaN : ModelBenchmark.CopyBandwidth(backend is Engine.Cpu.CpuBackend cpu ? cpu.Threads : Environment.ProcessorCount);

        var rows = new List<ModelBenchmarkRow>();
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        AnsiConsole.MarkupLine($"model shape of [bold]{Markup.Escape(policy)}[/]: {weights.ParameterCount:N0} parameters, device {Markup.Escape(backend.Info.Id)}, ep {Markup.Escape(ep)}, dense {Markup.Escape(new TransformerOptions { Session = session, Dense = dense }.ResolveDense(backend.Info).ToString())}");
        AnsiConsole.Progress().AutoClear(true).Start(ctx =>
        {
            var task = ctx.AddTask("benchmarking", maxValue: cases.Count);
            bench.WarmUp(quick ? 3 : 5);
            foreach (var c in cases) { rows.Add(c()); task.Increment(1); }
        });
        var table = new Table().Border(TableBorder.Rounded).AddColumns("case", "batch", "tokens/sample", "median", "tokens/s", "dense / matmul", "time split", "attention / KV read");
        var md = new StringBuilder("| case | batch | tokens/sample | median | tokens/s | dense / matmul | time split | attention / KV read |\n|---|---:|---:|---:|---:|---:|---|---:|\n");
        foreach (var r in rows)
        {
            double overRead = r.AttentionOverKvRead(copy);
            string[] cells = [r.Case, r.Batch.ToString(CultureInfo.InvariantCulture), r.TokensPerSample.ToString(CultureInfo.InvariantCulture),
                Seconds(r.Seconds), r.TokensPerSecond.ToString("N0", CultureInfo.InvariantCulture), double.IsNaN(r.Ratio) ? "" : r.Ratio.ToString("F2", CultureInfo.InvariantCulture) + "×", r.Breakdown,
                double.IsNaN(overRead) ? "" : $"{overRead.ToString("F1", CultureInfo.InvariantCulture)}× ({(r.KvBytes / 1e6).ToString("F0", CultureInfo.InvariantCulture)} MB)"];
            table.AddRow(cells.Select(Markup.Escape).ToArray());
            md.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.Write(table);
        if (regime)
        {
            double ratio = rows[1].Seconds / rows[0].Seconds;
            string line = $"verify-{RegimeVerifyTokens} / decode-1 at batch 1: {ratio.ToString("F2", CultureInfo.InvariantCulture)}x ({(ratio <= BandwidthBoundRatio ? "bandwidth-bound" : "not bandwidth-bound")}: the bound is {BandwidthBoundRatio.ToString(CultureInfo.InvariantCulture)}x)";
            AnsiConsole.WriteLine(line);
            md.Append('\n').Append(line).Append('\n');
        }
        if (!double.IsNaN(copy))
        {
            string line = $"copy bandwidth {(copy / 1e9).ToString("F1", CultureInfo.InvariantCulture)} GB/s (bytes read, {backend.Info.Id}); attention / KV read = the attention time of a step over reading its K and V once at that rate";
            AnsiConsole.WriteLine(line);
            md.Append('\n').Append(line).Append('\n');
        }
        foreach (var d in rows.Where(r => r.Case == DraftDecode))
        {
            var target = rows.FirstOrDefault(r => r.Case == "decode" && r.Batch == d.Batch);
            if (target is null) continue;
            string line = $"draft decode step / target decode step at batch {d.Batch}: {(d.Seconds / target.Seconds).ToString("F3", CultureInfo.InvariantCulture)} (1/{(target.Seconds / d.Seconds).ToString("F0", CultureInfo.InvariantCulture)}; draft {Markup.Escape(draftFolder!)})";
            AnsiConsole.WriteLine(line);
            md.Append(line).Append('\n');
        }
        if (markdown is not null) AtomicFile.WriteText(markdown, md.ToString());
        return 0;
    }

    internal static string Seconds(double s) => s switch
    {
        >= 1 => $"{s:F2} s",
        >= 1e-3 => $"{s * 1e3:F2} ms",
        _ => $"{s * 1e6:F0} µs",
    };
}
