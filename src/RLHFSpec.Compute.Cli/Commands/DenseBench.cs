using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Vulkan;
using RLHFSpec.Compute.Model.Formats;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec bench dense</c>: the Vulkan dense kernels on a model's projection shapes. The matrix-vector path
/// (decode) as weight bytes read per second against the device's copy bandwidth (the copy shader: what memory can
/// give), and the tiled path at 256 tokens as GFLOP/s, against a peak given on the command line (Vulkan reports
/// no peak, and it is not guessed from the vendor).
/// </summary>
internal static class DenseBench
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model folder (config.json) whose projection shapes are timed; default: the embedded policy" };
        var set = CommonOptions.Set();
        var device = new Option<string>("--device") { Description = "vulkan | vulkan:N", DefaultValueFactory = _ => "vulkan" };
        var tokens = new Option<int>("--tokens") { Description = "Tokens of the tiled (many-row) case", DefaultValueFactory = _ => 256 };
        var peak = new Option<double>("--peak-tflops") { Description = "The device's fp32 peak in TFLOP/s, for the tiled path's fraction (0: not reported)" };
        var seconds = new Option<double>("--seconds") { Description = "Least time measured per case", DefaultValueFactory = _ => 0.5 };
        var markdown = CommonOptions.Markdown();
        var command = new Command("dense", "Vulkan dense kernels: matrix-vector bandwidth vs copy bandwidth, tiled matmul GFLOP/s vs a given peak") { model, set, device, tokens, peak, seconds, markdown };
        command.SetAction(r => Run(r.GetValue(model), r.GetValue(set), r.GetValue(device)!, r.GetValue(tokens), r.GetValue(peak), r.GetValue(seconds), r.GetValue(markdown)));
        return command;
    }

    private static int Run(string? modelFolder, string? set, string deviceName, int tokens, double peakTflops, double minSeconds, string? markdown)
    {
        if (tokens < 1) throw new ArgumentException($"--tokens: {tokens}, must be >= 1");
        if (!(peakTflops >= 0)) throw new ArgumentException($"--peak-tflops: {peakTflops}, must be >= 0");
        if (!(minSeconds > 0)) throw new ArgumentException($"--seconds: {minSeconds}, must be > 0");
        OutputPaths.Check(("--markdown", markdown));
        var (policy, _) = ModelFolders.Resolve(modelFolder, null, draftOptional: true, set: set);
        var config = ModelConfig.Load(Path.Combine(policy, ModelConfig.FileName));
        using var opened = Devices.Open(deviceName);
        if (opened is not VulkanBackend vk) throw new ArgumentException($"--device {deviceName}: bench dense times the Vulkan kernels; give a Vulkan device (vulkan or vulkan:N)");
        int h = config.HiddenSize, ff = config.IntermediateSize;

        // Copy bandwidth: read + write of a buffer much larger than any cache.
        long words = Math.Min(64L << 20, vk.Info.Limits.MaxStorageBufferRange / 4 - 64);
        double copyBytesPerSecond;
        using (var src = vk.Allocate<uint>(words, "bench.copy-src"))
        using (var dst = vk.Allocate<uint>(words, "bench.copy-dst"))
            copyBytesPerSecond = 2.0 * words * 4 / Time(vk, minSeconds, () => vk.CopyWords(src, 0, dst, 0, words));

        var rows = new List<string[]>();
        void Matrix(string name, int outDim, int inDim)
        {
            var random = new Random(outDim ^ inDim);
            var w32 = new float[(long)outDim * inDim];
            for (long i = 0; i < w32.Length; i++) w32[i] = (float)(random.NextDouble() - 0.5) * 0.1f;
            var w16 = new Half[(w32.Length + 3) / 4 * 4];
            for (long i = 0; i < w32.Length; i++) w16[i] = (Half)w32[i];
            using var wf = vk.Allocate<float>(w32.Length, "bench.w32");
            using var wh = vk.Allocate<Half>(w16.Length, "bench.w16");
            wf.Write(w32);
            wh.Write(w16);
            using var x = vk.Allocate<float>((long)tokens * inDim, "bench.x");
            using var y = vk.Allocate<float>((long)tokens * outDim, "bench.y");
            x.Write(Enumerable.Range(0, tokens * inDim).Select(i => (float)Math.Sin(i)).ToArray());
            foreach (bool half in new[] { false, true })
            {
                string type = half ? "f16" : "f32";
                double weightBytes = (double)outDim * inDim * (half ? 2 : 4);
                void Project(int t, MatMulPath path)
                {
                    if (half) vk.Project(x, t, inDim, inDim, wh, outDim, null, y, outDim, 0, false, path);
                    else vk.Project(x, t, inDim, inDim, wf, outDim, null, y, outDim, 0, false, path);
                }
                double one = Time(vk, minSeconds, () => Project(1, MatMulPath.MatVec));
                double bw = weightBytes / one;
                rows.Add([$"{name} [{outDim}×{inDim}] {type}", "matvec", "1", Us(one), $"{bw / 1e9:F1} GB/s", $"{bw / copyBytesPerSecond:P0} of copy"]);
                double many = Time(vk, minSeconds, () => Project(tokens, vk.ChooseMatMulPath(tokens)));
                double flops = 2.0 * tokens * outDim * inDim / many;
                string ofPeak = peakTflops > 0 ? $"{flops / (peakTflops * 1e12):P1} of {peakTflops:G4} TFLOP/s" : "";
                rows.Add([$"{name} [{outDim}×{inDim}] {type}", vk.ChooseMatMulPath(tokens).ToString().ToLowerInvariant(), tokens.ToString(CultureInfo.InvariantCulture), Us(many), $"{flops / 1e9:F1} GFLOP/s", ofPeak]);
            }
        }
        Matrix("up/gate", ff, h);
        Matrix("down", h, ff);

        var info = vk.Info;
        AnsiConsole.MarkupLine(Markup.Escape($"device {info.Id}: {info.Name} ({info.Type.Name()}, {info.Driver}), subgroup {info.Limits.SubgroupSize}, cooperative matrix {(info.CooperativeMatrix ? "reported (no shader yet: tiled path)" : "not reported")}; shapes of {policy}"));
        AnsiConsole.MarkupLine(Markup.Escape($"copy bandwidth (copy shader, {words * 4 >> 20} MiB read + written): {copyBytesPerSecond / 1e9:F1} GB/s"));
        string[] headers = ["projection", "path", "tokens", "median", "rate", "fraction"];
        var table = new Table().Border(TableBorder.Rounded).AddColumns(headers);
        foreach (var r in rows) table.AddRow(r.Select(Markup.Escape).ToArray());
        AnsiConsole.Write(table);
        if (markdown is not null)
        {
            var md = new StringBuilder($"device {info.Name} ({info.Type.Name()}); copy bandwidth {copyBytesPerSecond / 1e9:F1} GB/s\n\n| {string.Join(" | ", headers)} |\n|---|---|---:|---:|---:|---:|\n");
            foreach (var r in rows) md.Append("| ").Append(string.Join(" | ", r)).Append(" |\n");
            File.WriteAllText(markdown, md.ToString());
        }
        return 0;
    }

    private static string Us(double seconds) => $"{seconds * 1e6:F0} µs";

    /// <summary>Seconds per call of <paramref name="record"/>: batches of recorded calls, one submit each, until <paramref name="minSeconds"/> have passed; the median batch.</summary>
    private static double Time(VulkanBackend vk, double minSeconds, Action record)
    {
        record();
        vk.Flush();
        int perBatch = 1;
        var clock = Stopwatch.StartNew();
        record();
        vk.Flush();
        double first = clock.Elapsed.TotalSeconds;
        perBatch = (int)Math.Clamp(0.05 / Math.Max(first, 1e-7), 1, 1000);
        var samples = new List<double>();
        var total = Stopwatch.StartNew();
        while (total.Elapsed.TotalSeconds < minSeconds || samples.Count < 3)
        {
            clock.Restart();
            for (int i = 0; i < perBatch; i++) record();
            vk.Flush();
            samples.Add(clock.Elapsed.TotalSeconds / perBatch);
        }
        samples.Sort();
        return samples[samples.Count / 2];
    }
}
