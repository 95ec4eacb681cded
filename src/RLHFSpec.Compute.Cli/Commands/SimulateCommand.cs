using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Generation.Simulation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Tasks;
using Spectre.Console;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec simulate</c>: the generation stage of a cluster of N instances as a discrete-event simulation driven
/// by a measured cost profile (<c>generate --cost-profile FILE</c> writes one) and a length distribution (a
/// <c>generate --out</c> JSONL, or the default task's), comparing static assignment with reallocation.
/// </summary>
internal static class SimulateCommand
{
    public static Command Create()
    {
        var profile = new Option<string?>("--cost-profile") { Description = "Cost profile JSON measured on the device (written by generate --cost-profile); with --validate: loaded if it exists, else measured and saved there" };
        var instances = new Option<int[]?>("--instances") { Description = "Instance counts to simulate (default 4 16 64); with --validate one count (default 2)", AllowMultipleArgumentsPerToken = true };
        var lengths = new Option<string?>("--lengths") { Description = "JSONL from generate --out (response lengths; prompt_tokens when present); default: the default task" };
        var samples = new Option<int>("--samples-per-instance") { Description = "Samples per instance in the workload", DefaultValueFactory = _ => 64 };
        var seed = new Option<int>("--seed") { Description = "Seed of the workload (with --validate: of the prompts and the sampling)", DefaultValueFactory = _ => 1 };
        var markdown = CommonOptions.Markdown();
        var validate = new Option<bool>("--validate") { Description = "Generate the default task's workload for real on the instances (static, then reallocated) and print the simulator's prediction beside each measured completion time" };
        var v = SimulatorValidationRun.Options.Create();
        var command = new Command("simulate", "Simulate N generation instances from a measured cost profile: static assignment vs reallocation")
        {
            profile, instances, lengths, samples, seed, markdown, validate,
        };
        foreach (var o in v.All) command.Options.Add(o);
        command.SetAction(r =>
        {
            if (r.GetValue(validate))
            {
                var counts = r.GetValue(instances) is { Length: > 0 } given ? given : [2];
                if (counts.Length != 1 || counts[0] < 1) throw new ArgumentException($"--instances: with --validate give one count >= 1, not '{string.Join(' ', counts)}'");
                if (r.GetValue(lengths) is not null) throw new ArgumentException("--lengths: --validate takes its lengths from the real runs");
                return SimulatorValidationRun.Run(v.Read(r), counts[0], r.GetValue(profile), r.GetValue(seed), r.GetValue(markdown));
            }
            if (v.Read(r).Set is { } set) throw new ArgumentException($"--set {set}: only with --validate (the simulator's costs come from --cost-profile)");
            return Run(r.GetValue(profile) ?? throw new ArgumentException("--cost-profile: required (measure one with generate --cost-profile FILE, or use --validate)"),
                r.GetValue(instances) is { Length: > 0 } list ? list : [4, 16, 64], r.GetValue(lengths), r.GetValue(samples), r.GetValue(seed), r.GetValue(markdown));
        });
        return command;
    }

    private static int Run(string profilePath, int[] instanceCounts, string? lengthsPath, int samplesPerInstance, int seed, string? markdown)
    {
        if (instanceCounts.Length == 0 || instanceCounts.Any(n => n < 1)) throw new ArgumentException("--instances: every count must be >= 1");
        if (samplesPerInstance < 1) throw new ArgumentException($"--samples-per-instance: {samplesPerInstance}, must be >= 1");
        OutputPaths.Check(("--markdown", markdown));
        var cost = CostModel.Load(profilePath);
        var pool = lengthsPath is null ? TaskLengths(seed) : FileLengths(lengthsPath);
        var table = new Table().Border(TableBorder.Rounded).AddColumns("instances", "samples", "static s", "reallocated s", "speed-up", "migrations");
        var md = new StringBuilder("| instances | samples | static s | reallocated s | speed-up | migrations |\n|---:|---:|---:|---:|---:|---:|\n");
        foreach (int n in instanceCounts)
        {
            var random = new Random(seed + n);
            var workload = Enumerable.Range(0, n * samplesPerInstance).Select(i =>
            {
                var (prompt, response) = pool[random.Next(pool.Count)];
                return new SimulatedSample(i, prompt, response, response);
            }).ToArray();
            SimulationResult Simulate(bool reallocate, Action<long, long>? progress)
            {
                var acceptance = new AcceptanceEstimator();
                var selector = new StrategySelector(cost, acceptance, Generation.Generator.DefaultCandidates(hasDraft: cost.Draft.Predict(1) > 0));
                return new ClusterSimulator(cost, selector) { OnProgress = progress }.Run(workload, new SimulationOptions { Instances = n, Reallocate = reallocate });
            }
            SimulationResult still = null!, moved = null!;
            if (Console.IsOutputRedirected)
            {
                still = Simulate(false, null);
                moved = Simulate(true, null);
            }
            else
                AnsiConsole.Progress().AutoClear(true).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask($"{n} instances", maxValue: 2.0 * workload.Length);
                        // The simulator reports every finished sample; the bar is redrawn a few times a second anyway.
                        still = Simulate(false, (done, _) => task.Value = done);
                        moved = Simulate(true, (done, all) => task.Value = all + done);
                    });
            string[] cells = [n.ToString(CultureInfo.InvariantCulture), workload.Length.ToString(CultureInfo.InvariantCulture),
                still.CompletionSeconds.ToString("F2", CultureInfo.InvariantCulture), moved.CompletionSeconds.ToString("F2", CultureInfo.InvariantCulture),
                (still.CompletionSeconds / moved.CompletionSeconds).ToString("F2", CultureInfo.InvariantCulture) + "×", moved.Migrations.ToString(CultureInfo.InvariantCulture)];
            table.AddRow(cells);
            md.Append("| ").Append(string.Join(" | ", cells)).Append(" |\n");
        }
        AnsiConsole.MarkupLine($"cost profile {Markup.Escape(profilePath)} (device {Markup.Escape(cost.Device)}), {pool.Count} lengths from {Markup.Escape(lengthsPath ?? "the default task")}");
        AnsiConsole.Write(table);
        if (markdown is not null) AtomicFile.WriteText(markdown, md.ToString());
        return 0;
    }

    /// <summary>Prompt and response lengths of the default task under its character tokenizer (+1 for the end token).</summary>
    private static List<(int, int)> TaskLengths(int seed)
    {
        var task = new ArithmeticTask(seed);
        return Enumerable.Range(0, 4096).Select(_ => task.Next()).Select(s => (s.Prompt.Length, s.ReferenceResponse.Length + 1)).ToList();
    }

    private static List<(int, int)> FileLengths(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException(Directory.Exists(path) ? $"--lengths '{path}' is a folder, not a file" : $"--lengths '{path}' does not exist", path);
        var list = new List<(int, int)>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            try
            {
                using var doc = JsonDocument.Parse(text);
                var root = doc.RootElement;
                if (!root.TryGetProperty("tokens", out var tokens) || tokens.ValueKind != JsonValueKind.Array)
                    throw new InvalidDataException($"--lengths '{path}', line {line}: no \"tokens\" array");
                int prompt = root.TryGetProperty("prompt_tokens", out var p) && p.TryGetInt32(out int pt) ? pt : 16;
                list.Add((Math.Max(1, prompt), Math.Max(1, tokens.GetArrayLength())));
            }
            catch (JsonException e) { throw new InvalidDataException($"--lengths '{path}', line {line}: not valid JSON ({e.Message})"); }
        }
        if (list.Count == 0) throw new InvalidDataException($"--lengths '{path}': no samples");
        return list;
    }
}
