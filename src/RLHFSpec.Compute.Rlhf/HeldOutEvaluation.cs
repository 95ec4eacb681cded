using System.Diagnostics;
using System.Text;
using System.Text.Json;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.IO;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The held-out evaluation set of a run (verl's validation set): fixed prompts, each answered once (greedy by
/// default) through the run's own <see cref="Generator"/> by <see cref="Generator.RunDetached"/>, which leaves the
/// rollouts' suffix index, acceptance statistics and cost model untouched; its random numbers (sampled evaluation)
/// are keyed by the evaluation seed and the prompt, never by the rollouts' streams. The set is written into the run
/// folder at the start (<see cref="PromptsFile"/>) and read back from there on resume, so a resumed run scores the
/// very same prompts whatever happened to the file it came from.
/// </summary>
public sealed class HeldOutEvaluation
{
    public const string PromptsFile = "eval_prompts.jsonl";

    private readonly int[][] _ids;
    private readonly int[] _firstOf; // per prompt: the index of its first occurrence in the set
    private DetachedRunState? _state;

    private HeldOutEvaluation(IReadOnlyList<string> prompts, int[][] ids, string source)
    {
        Prompts = prompts;
        _ids = ids;
        var first = new Dictionary<string, int>(StringComparer.Ordinal);
        _firstOf = prompts.Select((p, i) => first.TryAdd(p, i) ? i : first[p]).ToArray();
        Source = source;
        AreTaskPrompts = prompts.All(p =>
        {
            try { ArithmeticTask.Answer(p); return true; }
            catch (FormatException) { return false; }
        });
    }

    public IReadOnlyList<string> Prompts { get; }

    /// <summary>Where the set came from, for messages: the file, or the task and its seed.</summary>
    public string Source { get; }

    /// <summary>Every prompt is a default-task prompt (so the task's exact verifier can score it).</summary>
    public bool AreTaskPrompts { get; }

    /// <summary>
    /// The run's evaluation set, or null when it has none: evaluation is off (<c>eval_every</c> 0 and no
    /// <c>eval_before_train</c>), or the training prompts come from a file and no <c>eval_prompts</c> was given. On
    /// resume the set saved in the run folder is used when present. Prompts the tokenizer cannot encode, or that leave
    /// no room for a response in <paramref name="maxContext"/>, are refused naming the file and prompt (prompts drawn
    /// from the task that do not fit are skipped).
    /// </summary>
    public static HeldOutEvaluation? Resolve(RlhfConfig config, string runFolder, bool resume, bool trainingPromptsFromTask, TextTokenizer tokenizer, int maxContext)
    {
        if (config.EvalEvery == 0 && !config.EvalBeforeTrain) return null;
        string saved = Path.Combine(runFolder, PromptsFile);
        IReadOnlyList<string> prompts;
        string source;
        if (resume && File.Exists(saved)) (prompts, source) = (PromptFile.Read(saved), $"'{saved}'");
        else if (config.EvalPrompts is { } file) (prompts, source) = (PromptFile.Read(file), $"eval_prompts '{file}'");
        else if (trainingPromptsFromTask)
        {
            var task = new ArithmeticTask(config.EvalSeed);
            var drawn = new List<string>();
            for (int tries = 0; drawn.Count < config.EvalNumPrompts && tries < 100 * config.EvalNumPrompts; tries++)
            {
                string p = task.Next().Prompt;
                if (tokenizer.Encode(p).Length < maxContext) drawn.Add(p);
            }
            (prompts, source) = (drawn, $"{drawn.Count} task prompts (eval_seed {config.EvalSeed})");
        }
        else return null;
        var ids = new int[prompts.Count][];
        for (int i = 0; i < prompts.Count; i++)
        {
            ids[i] = tokenizer.EncodeChecked(prompts[i], $"{source}: prompt {i}");
            if (ids[i].Length >= maxContext)
                throw new InvalidDataException($"{source}: prompt {i} has {ids[i].Length} tokens; the policy's context is {maxContext}, which leaves no room for a response");
        }
        return new HeldOutEvaluation(prompts, ids, source);
    }

    /// <summary>Writes the set as JSONL (<c>{"prompt": …}</c> lines), atomically.</summary>
    public void Save(string path)
    {
        var text = new StringBuilder();
        var json = new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        foreach (var p in Prompts) text.Append(JsonSerializer.Serialize(new Dictionary<string, string> { ["prompt"] = p }, json)).Append('\n');
        AtomicFile.WriteText(path, text.ToString());
    }

    /// <summary>One response per prompt, in prompt order, and the seconds the generation took.</summary>
    public (IReadOnlyList<SampleResult> Results, GenerationStats Stats, double Seconds) Generate(Generator generator, RlhfConfig config)
    {
        var clock = Stopwatch.StartNew();
        // Ids 0.. (the rollouts' start at 10,000,000 per iteration) and the evaluation's own seed: with a temperature,
        // every evaluation draws the same random numbers, so two evaluations differ only by the policy.
        var requests = GenerationRequests.For(_ids, 1, config.MaxNewTokens, (float)config.EvalTemperature, (float)config.TopP,
            seed: (ulong)(uint)config.EvalSeed * 1_000_003UL, firstId: 0);
        // Greedy answers depend on the prompt only, so a repeated prompt is answered once and its answer copied.
        int[] firstOf = config.EvalTemperature == 0 ? _firstOf : Enumerable.Range(0, requests.Length).ToArray();
        var (outcome, state) = generator.RunDetached(requests.Where((_, i) => firstOf[i] == i).ToArray(), _state);
        _state = state;
        var byPrompt = outcome.Results.ToDictionary(r => r.Request.PromptIndex);
        var results = requests.Select((r, i) => firstOf[i] == i ? byPrompt[i] : byPrompt[firstOf[i]] with { Request = r }).ToArray();
        return (results, outcome.Stats, clock.Elapsed.TotalSeconds);
    }

    /// <summary>Distinct prompts in the set (a task-drawn set repeats short prompts).</summary>
    public int DistinctPrompts => _firstOf.Where((f, i) => f == i).Count();
}
