using RLHFSpec.Compute.Generation.Selection;
using System.CommandLine;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Transformer;
using Spectre.Console;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec bench peer</c>: our plain decoding against llama.cpp on the same weights. The model is exported to a
/// temporary GGUF; for each batch size B, B sequences of the same default-task prompt decode the same number of
/// tokens greedily (no stop token) on both sides with the same threads: ours through the <see cref="Generator"/> with
/// strategy <c>off</c> at temperature 0 (the path <c>generate</c> takes; prefill and decode seconds from its stats),
/// llama.cpp through LLamaSharp with flash attention on and off and KV cache f16 and f32, its best configuration
/// taken per case and phase. Repeats are interleaved (ours, then each llama.cpp configuration), after one untimed
/// warm-up of each; medians are reported. Tokens are compared: llama.cpp with flash attention off and an f32 KV cache
/// computes what we compute to about 1e-6, so its tokens must equal ours; the other configurations round (half-precision
/// KV or attention) and are reported, not required, to agree.
/// </summary>
internal static class PeerBench
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var batchSizes = new Option<int[]>("--batch-sizes") { Description = "Sequences decoded together (each size is a case)", AllowMultipleArgumentsPerToken = true, DefaultValueFactory = _ => [1, 16, 64] };
        var promptTerms = new Option<int>("--prompt-terms") { Description = "Terms of the default-task prompt (30 terms ≈ 60 tokens)", DefaultValueFactory = _ => 30 };
        var newTokens = new Option<int>("--new-tokens") { Description = "Tokens each sequence generates", DefaultValueFactory = _ => 200 };
        var threads = new Option<int>("--threads") { Description = "Threads on both sides (ONNX Runtime intra-op, llama.cpp)", DefaultValueFactory = _ => 2 };
        var repeats = new Option<int>("--repeats") { Description = "Timed repeats per case (interleaved; medians reported)", DefaultValueFactory = _ => 3 };
        var device = CommonOptions.Device();
        var dense = new Option<string[]>("--dense")
        {
            Description = "Our dense-layer executors to time, each a row (auto | onnx | managed | vulkan)", AllowMultipleArgumentsPerToken = true, DefaultValueFactory = _ => ["auto"],
        };
        var markdown = CommonOptions.Markdown();
        var set = CommonOptions.Set();
        var command = new Command("peer", "Plain decoding against llama.cpp on the same weights: prefill and decode tokens/s, and ratios")
        {
            model, set, batchSizes, promptTerms, newTokens, threads, repeats, device, dense, markdown,
        };
        command.SetAction(r => Run(r.GetValue(model), r.GetValue(batchSizes) ?? [], r.GetValue(promptTerms), r.GetValue(newTokens), r.GetValue(threads),
            r.GetValue(repeats), r.GetValue(device)!, r.GetValue(dense) ?? [], r.GetValue(markdown), r.GetValue(set)));
        return command;
    }

    private sealed record Side(string Name, List<double> Prefill, List<double> Decode, List<bool> Equal, string Executor = "");

    private static int Run(string? modelFolder, int[] batchSizes, int promptTerms, int newTokens, int threads, int repeats, string deviceName, string[] denseNames, string? markdown, string? set = null)
    {
        var session = new OnnxSessionOptions { IntraOpThreads = threads };
        if (denseNames.Length == 0) throw new ArgumentException("--dense: give at least one of auto, onnx, managed, vulkan");
        var requested = denseNames.Select(n => CommonOptions.ParseDense(n)).ToArray();
        if (batchSizes.Length == 0 || batchSizes.Any(b => b < 1)) throw new ArgumentException($"--batch-sizes: [{string.Join(' ', batchSizes)}], each must be >= 1");
        if (promptTerms is < ArithmeticTask.MinTerms or > ArithmeticTask.MaxTerms)
            throw new ArgumentException($"--prompt-terms: {promptTerms}, must be in {ArithmeticTask.MinTerms}..{ArithmeticTask.MaxTerms}");
        if (newTokens < 2) throw new ArgumentException($"--new-tokens: {newTokens}, must be >= 2 (one from prefill, the rest decoded)");
        if (threads < 1) throw new ArgumentException($"--threads: {threads}, must be >= 1");
        if (repeats < 1) throw new ArgumentException($"--repeats: {repeats}, must be >= 1");
        if (markdown is not null) ExportCommand.CheckOutput(markdown);

        var (policyFolder, _) = ModelFolders.Resolve(modelFolder, null, draftOptional: true, set: set);
        using var checkpoint = Checkpoint.Load(policyFolder);
        var random = new Random(20260518);
        string promptText = ArithmeticTask.Make(Enumerable.Range(0, promptTerms).Select(_ => random.Next(0, ArithmeticTask.MaxTerm + 1)).ToArray()).Prompt;
        var prompt = checkpoint.Tokenizer.EncodeChecked(promptText, "the task prompt");
        if (prompt.Length + newTokens > checkpoint.Config.MaxPositionEmbeddings)
            throw new ArgumentException($"--new-tokens: {prompt.Length} prompt + {newTokens} new tokens exceed the model's context ({checkpoint.Config.MaxPositionEmbeddings})");

        string gguf = Path.Combine(Path.GetTempPath(), $"rlhfspec-peer-{Guid.NewGuid():N}.gguf");
        var rows = new List<(int Batch, List<Side> Ours, List<Side> Peers)>();
        try
        {
            var summary = GgufExporter.Export(policyFolder, gguf);
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
            AnsiConsole.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                $"peer bench: {policyFolder} exported to GGUF ({summary.Architecture}, {summary.Bytes / 1e6:F1} MB); prompt of {promptTerms} terms = {prompt.Length} tokens, {newTokens} new tokens, {threads} thread(s), {repeats} repeat(s)")));
            using var backend = Engine.Devices.Open(deviceName);
            var executors = requested.Select(kind => new TransformerOptions { Session = session, Dense = kind }.ResolveDense(backend.Info).Kind).Distinct().ToArray();
            using var weights = TransformerWeights.FromCheckpoint(checkpoint);
            foreach (int batch in batchSizes)
            {
                long kvBytes = Math.Max(256L << 20, 2L * batch * (prompt.Length + newTokens + 64) * checkpoint.Config.NumHiddenLayers * checkpoint.Config.NumKeyValueHeads * checkpoint.Config.HeadDim * 4 * 2);
                var models = new List<TransformerModel>();
                var peers = new List<LlamaCppPeer>();
                try
                {
                    foreach (var executor in executors)
                        models.Add(new TransformerModel(weights, backend, new TransformerOptions { KvMemoryBudgetBytes = kvBytes, Session = session, Dense = executor }));
                    var generators = models.Select(m => new Generator(m, null, new GeneratorSettings { Strategy = StrategyMode.Of(Strategy.Off), MaxBatch = batch, MaxPrefillTokens = Math.Max(4096, batch * prompt.Length) })).ToArray();
                    var requests = GenerationRequests.For(Enumerable.Repeat(prompt, batch).ToArray(), samplesPerPrompt: 1, newTokens, temperature: 0, topP: 1f, seed: 1);
                    foreach (bool flash in new[] { false, true })
                        foreach (bool f16 in new[] { true, false })
                            peers.Add(new LlamaCppPeer(gguf, threads, batch, prompt.Length, newTokens, flash, f16));
                    var ours = models.Select(m => new Side($"ours (strategy off, dense {m.DenseExecutor})", new(), new(), new(), $"dense {m.DenseExecutor}")).ToList();
                    var theirs = peers.Select(p => new Side("llama.cpp, " + p.Name, new(), new(), new())).ToList();
                    int[][]? reference = null;
                    for (int r = -1; r < repeats; r++) // r = -1: untimed warm-up
                    {
                        AnsiConsole.MarkupLine(Markup.Escape($"batch {batch}: {(r < 0 ? "warm-up" : $"repeat {r + 1}/{repeats}")}"));
                        for (int g = 0; g < generators.Length; g++)
                        {
                            Settle();
                            // The warm-up runs until the JIT has tiered up the step's code (see WarmUpSeconds).
                            var warm = System.Diagnostics.Stopwatch.StartNew();
                            var outcome = generators[g].Run(requests);
                            while (r < 0 && warm.Elapsed.TotalSeconds < WarmUpSeconds) outcome = generators[g].Run(requests);
                            var tokens = outcome.Results.Select(x => x.Tokens).ToArray();
                            if (tokens.Any(t => t.Length != newTokens)) throw new InvalidOperationException($"our run stopped early: {string.Join(' ', tokens.Select(t => t.Length))} tokens");
                            reference ??= tokens;
                            if (!Same(tokens, reference))
                                throw new InvalidOperationException($"our dense executors decoded different tokens at batch {batch} ({ours[g].Name} against {ours[0].Name})");
                            if (r < 0) continue;
                            ours[g].Prefill.Add(outcome.Stats.PrefillTokensPerSecond);
                            ours[g].Decode.Add(outcome.Stats.DecodeTokensPerSecond);
                            ours[g].Equal.Add(true);
                        }
                        for (int k = 0; k < peers.Count; k++)
                        {
                            Settle();
                            var (peerTokens, prefill, decode) = peers[k].Run(prompt, batch, newTokens);
                            if (r < 0) continue;
                            theirs[k].Prefill.Add(batch * prompt.Length / prefill);
                            theirs[k].Decode.Add(batch * (newTokens - 1) / decode);
                            theirs[k].Equal.Add(Same(peerTokens, reference!));
                        }
                    }
                    rows.Add((batch, ours, theirs));
                }
                finally
                {
                    foreach (var p in peers) p.Dispose();
                    foreach (var m in models) m.Dispose();
                }
            }
        }
        finally { File.Delete(gguf); }

        Report(rows, markdown, prompt.Length, newTokens, threads, repeats);
        // Flash attention off with an f32 KV cache is llama.cpp computing what we compute: its tokens must be ours.
        var exact = rows.Where(r => !r.Peers.Single(p => p.Name.EndsWith("flash attention off, KV f32", StringComparison.Ordinal)).Equal.All(e => e)).Select(r => r.Batch).ToArray();
        if (exact.Length > 0)
        {
            Console.Error.WriteLine($"rlhfspec: error: llama.cpp (flash attention off, KV f32) decoded other tokens than ours at batch size(s) {string.Join(", ", exact)}");
            return 1;
        }
        Console.WriteLine("tokens: llama.cpp with flash attention off and an f32 KV cache decoded exactly our tokens at every batch size");
        return 0;
    }

    /// <summary>
    /// A pause before each timed run, so the previous runtime's threads (llama.cpp's poll before they sleep; our pool
    /// spins a while) have gone idle and do not compete with the next run's prefill: the same for both sides.
    /// </summary>
    private static void Settle() => Thread.Sleep(SettleMilliseconds);

    private const int SettleMilliseconds = 200;

    /// <summary>
    /// Seconds of untimed runs of each of our executors before the timed ones. The step's code starts in the JIT's quick
    /// tiers and is recompiled optimised (with profile data) after it has run a while: measured with the default policy at
    /// batch 1, the first ~1,200 steps (about 0.7 s) took 480–640 µs each, the later ones 230–350 µs. One short warm-up
    /// run (200 steps) left the timed repeats sometimes before and sometimes after that point, which is what made our
    /// batch-1 rate bimodal between runs (about 1,700 or 3,500 tokens/s). llama.cpp is native code and needs no such wait.
    /// </summary>
    private const double WarmUpSeconds = 2.0;

    private static bool Same(int[][] a, int[][] b) => a.Length == b.Length && a.Zip(b).All(p => p.First.AsSpan().SequenceEqual(p.Second));

    private static void Report(List<(int Batch, List<Side> Ours, List<Side> Peers)> rows, string? markdown, int promptTokens, int newTokens, int threads, int repeats)
    {
        string F(double x) => x.ToString("N0", CultureInfo.InvariantCulture);
        string R(double x) => x.ToString("F2", CultureInfo.InvariantCulture) + "×";
        string[] header = ["batch", "ours", "prefill ours", "prefill llama.cpp best", "prefill ours / best", "decode ours", "decode llama.cpp best", "decode ours / best", "tokens equal"];
        var table = new Table().Border(TableBorder.Rounded).AddColumns(header);
        var md = new StringBuilder().Append(string.Create(CultureInfo.InvariantCulture,
            $"tokens/s, medians of {repeats} interleaved repeat(s); prompt {promptTokens} tokens, {newTokens} new tokens per sequence, {threads} thread(s)\n\n"));
        md.Append("| ").Append(string.Join(" | ", header)).Append(" |\n|---:|---|---:|---|---:|---:|---|---:|---|\n");
        var detail = new StringBuilder("\n| batch | runtime | prefill tokens/s | decode tokens/s | tokens equal ours |\n|---:|---|---:|---:|---|\n");
        foreach (var (batch, oursAll, peers) in rows)
        {
            var bestPrefill = peers.MaxBy(p => BenchStatistics.Median(p.Prefill))!;
            var bestDecode = peers.MaxBy(p => BenchStatistics.Median(p.Decode))!;
            double lp = BenchStatistics.Median(bestPrefill.Prefill), ld = BenchStatistics.Median(bestDecode.Decode);
            var differ = peers.Where(p => !p.Equal.All(e => e)).Select(p => p.Name["llama.cpp, ".Length..]).ToArray();
            string equal = differ.Length == 0 ? $"yes, all {peers.Count} configurations" : $"not with {string.Join("; ", differ)}";
            foreach (var ours in oursAll)
            {
                double op = BenchStatistics.Median(ours.Prefill), od = BenchStatistics.Median(ours.Decode);
                string[] cells = [batch.ToString(CultureInfo.InvariantCulture), ours.Executor, F(op), $"{F(lp)} ({bestPrefill.Name["llama.cpp, ".Length..]})", R(op / lp),
                    F(od), $"{F(ld)} ({bestDecode.Name["llama.cpp, ".Length..]})", R(od / ld), equal];
                table.AddRow(cells.Select(Markup.Escape).ToArray());
                md.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
            }
            foreach (var side in oursAll.Concat(peers))
                detail.Append(string.Create(CultureInfo.InvariantCulture, $"| {batch} | {side.Name} | {F(BenchStatistics.Median(side.Prefill))} | {F(BenchStatistics.Median(side.Decode))} | {(oursAll.Contains(side) ? "-" : side.Equal.All(e => e) ? "yes" : "no")} |\n"));
        }
        AnsiConsole.Write(table);
        Console.WriteLine(detail.ToString());
        if (markdown is not null) AtomicFile.WriteText(markdown, md.Append(detail).ToString());
    }
}
