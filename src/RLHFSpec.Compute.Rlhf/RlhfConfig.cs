using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Every setting of an RLHF run. Read from a JSON config (snake_case keys; an unknown key is an error) and
/// overridden by command-line flags (the same names in kebab-case). <see cref="Validate"/> names the bad key and value.
/// </summary>
public sealed record RlhfConfig
{
    /// <summary>Policy model folder; null = the policy of <see cref="ModelSet"/>.</summary>
    [JsonPropertyName("policy")] public string? Policy { get; init; }
    /// <summary>
    /// A named model set in place of <see cref="Policy"/> (flag <c>--model-set</c>): null or "default" = the default
    /// models (pretrained on first use), "medium" = the bandwidth-bound set made by <c>pretrain --set medium</c>.
    /// </summary>
    [JsonPropertyName("model_set")] public string? ModelSet { get; init; }
    /// <summary>Draft model folder; null = the embedded small draft when the policy is the embedded one; "none" = no draft model.</summary>
    [JsonPropertyName("draft")] public string? Draft { get; init; }
    /// <summary>Prompts file (JSONL/Parquet); null = the default task's generator.</summary>
    [JsonPropertyName("prompts")] public string? Prompts { get; init; }
    /// <summary>
    /// Held-out evaluation set (JSONL/Parquet prompts); null = <see cref="EvalNumPrompts"/> default-task prompts drawn
    /// with <see cref="EvalSeed"/> when the training prompts are the task's, else no evaluation.
    /// </summary>
    [JsonPropertyName("eval_prompts")] public string? EvalPrompts { get; init; }
    /// <summary>Size of the default evaluation set (task prompts drawn once with <see cref="EvalSeed"/>).</summary>
    [JsonPropertyName("eval_num_prompts")] public int EvalNumPrompts { get; init; } = 1024;
    /// <summary>Seed of the default evaluation set and of sampled evaluation; fixed, so runs of any seed score the same set.</summary>
    [JsonPropertyName("eval_seed")] public int EvalSeed { get; init; } = 20251206;
    /// <summary>Evaluate after every N-th iteration and after the last (verl's test_freq); 0 = never after an iteration.</summary>
    [JsonPropertyName("eval_every")] public int EvalEvery { get; init; } = 15;
    /// <summary>Evaluate the initial policy before iteration 1 (verl's val_before_train), logged as iteration 0.</summary>
    [JsonPropertyName("eval_before_train")] public bool EvalBeforeTrain { get; init; } = true;
    /// <summary>Temperature of evaluation: 0 = greedy (the default); above 0, one sample per prompt with fixed random numbers.</summary>
    [JsonPropertyName("eval_temperature")] public double EvalTemperature { get; init; }
    /// <summary>task (the default task's exact verifier), regex:PATTERN, exact:TEXT or model:DIR (a reward model; see <see cref="RewardRule"/>).</summary>
    [JsonPropertyName("reward")] public string Reward { get; init; } = "task";
    /// <summary>
    /// Longest training prompt drawn from the default task, in terms (a curriculum over lengths; the held-out set keeps
    /// the task's whole distribution). The task's own limit, 64, draws from the task unchanged.
    /// </summary>
    [JsonPropertyName("task_max_terms")] public int TaskMaxTerms { get; init; } = Model.Tasks.ArithmeticTask.MaxTerms;
    [JsonPropertyName("iterations")] public int Iterations { get; init; } = 60;
    [JsonPropertyName("prompts_per_iteration")] public int PromptsPerIteration { get; init; } = 16;
    [JsonPropertyName("samples_per_prompt")] public int SamplesPerPrompt { get; init; } = 8;
    [JsonPropertyName("max_new_tokens")] public int MaxNewTokens { get; init; } = 256;
    [JsonPropertyName("temperature")] public double Temperature { get; init; } = 1.0;
    [JsonPropertyName("top_p")] public double TopP { get; init; } = 1.0;
    [JsonPropertyName("seed")] public int Seed { get; init; } = 1;
    /// <summary>grpo (group-normalised advantages, no critic) or ppo.</summary>
    [JsonPropertyName("algorithm")] public RlhfAlgorithm Algorithm { get; init; } = RlhfAlgorithm.Grpo;
    [JsonPropertyName("learning_rate")] public double LearningRate { get; init; } = 1e-4;
    [JsonPropertyName("kl_beta")] public double KlBeta { get; init; } = 0.02;
    [JsonPropertyName("clip")] public double Clip { get; init; } = 0.2;
    [JsonPropertyName("epochs")] public int Epochs { get; init; } = 1;
    /// <summary>Sequences per gradient step (bucketed by length).</summary>
    [JsonPropertyName("minibatch_size")] public int MinibatchSize { get; init; } = 64;
    /// <summary>
    /// Most rollouts per forward/backward pass: a minibatch is split into ceil(minibatch_size / micro_batch_size)
    /// micro-batches of consecutive rows whose gradients add up to the minibatch's (gradient accumulation, one optimizer
    /// step per minibatch); bounds the training graphs' activation memory. A size >= minibatch_size does not split.
    /// </summary>
    [JsonPropertyName("micro_batch_size")] public int MicroBatchSize { get; init; } = 16;
    [JsonPropertyName("max_grad_norm")] public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>PPO: the critic's checkpoint folder (scalar-head or causal LM); null = initialise it from the policy's trunk.</summary>
    [JsonPropertyName("critic")] public string? Critic { get; init; }
    /// <summary>PPO: the critic's AdamW learning rate (above the policy's, as is usual: its head starts from zero).</summary>
    [JsonPropertyName("critic_learning_rate")] public double CriticLearningRate { get; init; } = 1e-3;
    /// <summary>PPO: discount of per-token rewards in GAE.</summary>
    [JsonPropertyName("gamma")] public double Gamma { get; init; } = 1.0;
    [JsonPropertyName("gae_lambda")] public double GaeLambda { get; init; } = 0.95;
    /// <summary>PPO: how far (absolute) a value may move from the rollout's value before the value loss stops rewarding it.</summary>
    [JsonPropertyName("value_clip")] public double ValueClip { get; init; } = 0.2;
    /// <summary>PPO: scale of the value loss (the critic has its own optimizer; this weighs its gradient before clipping).</summary>
    [JsonPropertyName("value_coef")] public double ValueCoef { get; init; } = 0.5;
    /// <summary>PPO: coefficient of the entropy bonus in the policy loss.</summary>
    [JsonPropertyName("entropy_coef")] public double EntropyCoef { get; init; }
    /// <summary>off, adaptive, or a fixed strategy (chain:K, tree:D,K,B, suffix:K, suffix-tree:D,K,B).</summary>
    [JsonPropertyName("speculation")] public StrategyMode Speculation { get; init; } = StrategyMode.Adaptive;
    /// <summary>Sample reallocation across generation instances; <c>on</c>/<c>off</c> in JSON and on the command line.</summary>
    [JsonPropertyName("reallocate"), JsonConverter(typeof(ReallocateConverter))] public bool Reallocate { get; init; }
    [JsonPropertyName("instances")] public int Instances { get; init; } = 1;
    [JsonPropertyName("draft_refresh")] public bool DraftRefresh { get; init; } = true;
    /// <summary>
    /// AdamW steps of a distillation on each micro-batch. 1 since 2026-12-07: over 20 GRPO iterations on the medium
    /// set, 4 steps a micro-batch fit the draft to its batch and left it less accepted on the next rollouts (0.879–0.888
    /// against 0.908–0.916 with 1 step; README "Draft refresh only when due").
    /// </summary>
    [JsonPropertyName("draft_refresh_steps")] public int DraftRefreshSteps { get; init; } = 1;
    /// <summary>
    /// How far the draft's acceptance (Σ min(p, q) per response token, measured each iteration on its rollouts against
    /// the updated policy before any distillation) may fall below what it was on the iteration after its last
    /// distillation before it is distilled again; until then the refresh stage only measures. The first iteration of
    /// a run distils; the one after a distillation never does (it measures the reference). A negative value (−1)
    /// distils every iteration.
    /// </summary>
    [JsonPropertyName("draft_refresh_tolerance")] public double DraftRefreshTolerance { get; init; } = DefaultDraftRefreshTolerance;

    /// <summary>Default of <see cref="DraftRefreshTolerance"/>.</summary>
    public const double DefaultDraftRefreshTolerance = 0.02;

    /// <summary>Whether <paramref name="tolerance"/> is a valid <see cref="DraftRefreshTolerance"/>: in [−1, 1].</summary>
    public static bool IsDraftRefreshTolerance(double tolerance) => tolerance >= -1 && tolerance <= 1;
    [JsonPropertyName("draft_learning_rate")] public double DraftLearningRate { get; init; } = 5e-4;
    [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; } = 5;
    [JsonPropertyName("device")] public string Device { get; init; } = "auto";
    [JsonPropertyName("ep")] public string Ep { get; init; } = "cpu";
    /// <summary>What runs generation's dense layers: auto, onnx, managed, or vulkan (on the Vulkan device; its copy of the weights is refreshed each iteration).</summary>
    [JsonPropertyName("dense")] public string Dense { get; init; } = "auto";
    [JsonPropertyName("threads")] public int Threads { get; init; }
    [JsonPropertyName("kv_memory_mib")] public int KvMemoryMiB { get; init; } = 256;
    [JsonPropertyName("max_batch")] public int MaxBatch { get; init; } = 128;
    [JsonPropertyName("cost_profile")] public string? CostProfile { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.Strict,
        AllowDuplicateProperties = false,
        Converters =
        {
            new TextSettingConverter<RlhfAlgorithm>(v => SettingText.Algorithm(v), SettingText.Name),
            new TextSettingConverter<StrategyMode>(v => StrategyMode.Parse(v, "speculation"), m => m.ToString()),
        },
    };

    /// <summary>Settings whose text is parsed into a type of their own (by JSON key); the others are strings, numbers or bools.</summary>
    private static readonly Dictionary<string, Func<string, object>> TypedParsers = new()
    {
        ["algorithm"] = v => SettingText.Algorithm(v),
        ["speculation"] = v => StrategyMode.Parse(v, "speculation"),
        ["reallocate"] = v => SettingText.OnOff(v, "reallocate"),
    };

    /// <summary>The JSON key of every setting, in declaration order.</summary>
    public static IReadOnlyList<string> Keys { get; } = typeof(RlhfConfig).GetProperties()
        .Select(p => p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name).OfType<string>().ToArray();

    public static RlhfConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException(Directory.Exists(path) ? $"config '{path}' is a folder, not a file" : $"config '{path}' does not exist", path);
        try { return JsonSerializer.Deserialize<RlhfConfig>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"config '{path}': empty"); }
        catch (JsonException e)
        {
            string where = e.Path is { Length: > 2 } p ? $" at '{p[2..]}'" : "";
            string message = e.Message.Contains("could not be mapped", StringComparison.Ordinal)
                ? $"unknown key{where} (known keys: {string.Join(", ", Keys)})"
                : e.Message.Contains("uplicate", StringComparison.Ordinal) ? $"duplicate key{where}: each key may be given once"
                : $"bad value{where}: {e.Message.Split(". Path:")[0]}";
            throw new InvalidDataException($"config '{path}': {message}");
        }
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Overrides one setting by its key (snake_case or kebab-case) from a flag's text.</summary>
    public RlhfConfig With(string key, string value)
    {
        string name = key.TrimStart('-').Replace('-', '_');
        var property = typeof(RlhfConfig).GetProperties().FirstOrDefault(p => p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name == name)
            ?? throw new ArgumentException($"--{key.TrimStart('-')}: unknown setting (known: {string.Join(", ", Keys)})");
        object? parsed;
        try
        {
            var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            parsed = TypedParsers.TryGetValue(name, out var parse) ? parse(value)
                : type == typeof(string) ? value
                : type == typeof(int) ? int.Parse(value, NumberStyles.Integer, CultureInfo.InvariantCulture)
                : type == typeof(double) ? double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture)
                : type == typeof(bool) ? ParseBool(value)
                : throw new InvalidOperationException($"setting {name} has unsupported type {type}");
        }
        catch (FormatException) { throw new ArgumentException($"--{name.Replace('_', '-')}: '{value}' is not a valid {property.PropertyType.Name.ToLowerInvariant()}"); }
        catch (OverflowException) { throw new ArgumentException($"--{name.Replace('_', '-')}: '{value}' is out of range"); }
        var copy = this with { };
        property.SetValue(copy, parsed);
        return copy;
    }

    private static bool ParseBool(string value) => value.Trim().ToLowerInvariant() switch
    {
        "true" or "on" or "yes" or "1" => true,
        "false" or "off" or "no" or "0" => false,
        _ => throw new FormatException(),
    };

    /// <summary>
    /// Config files written before <see cref="DenseKind"/> was kept out of them hold a "DenseKind" key (its enum
    /// number): read and dropped, so those runs still load and resume (a resume checks the file's own text), and never
    /// written.
    /// </summary>
    [JsonInclude, JsonPropertyName("DenseKind"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    private int LegacyDenseKind { get => 0; init { } }

    /// <summary>The executor <see cref="Dense"/> names (derived from <c>dense</c>, not a setting: not in config.json).</summary>
    [JsonIgnore]
    public Model.Transformer.DenseExecutorKind DenseKind => Dense switch
    {
        "auto" => Model.Transformer.DenseExecutorKind.Auto,
        "onnx" => Model.Transformer.DenseExecutorKind.Onnx,
        "managed" => Model.Transformer.DenseExecutorKind.Managed,
        "vulkan" => Model.Transformer.DenseExecutorKind.Vulkan,
        _ => throw new ArgumentException($"dense: '{Dense}' is not one of auto, onnx, managed, vulkan"),
    };

    public void Validate()
    {
        void Positive(int v, string key) { if (v < 1) throw new ArgumentException($"{key}: {v}, must be >= 1"); }
        Positive(Iterations, "iterations");
        Positive(PromptsPerIteration, "prompts_per_iteration");
        Positive(SamplesPerPrompt, "samples_per_prompt");
        Positive(MaxNewTokens, "max_new_tokens");
        Positive(Epochs, "epochs");
        Positive(MinibatchSize, "minibatch_size");
        Positive(MicroBatchSize, "micro_batch_size");
        Positive(CheckpointEvery, "checkpoint_every");
        Positive(Instances, "instances");
        Positive(KvMemoryMiB, "kv_memory_mib");
        Positive(MaxBatch, "max_batch");
        Positive(EvalNumPrompts, "eval_num_prompts");
        if (TaskMaxTerms < Model.Tasks.ArithmeticTask.MinTerms || TaskMaxTerms > Model.Tasks.ArithmeticTask.MaxTerms)
            throw new ArgumentException($"task_max_terms: {TaskMaxTerms}, must be in [{Model.Tasks.ArithmeticTask.MinTerms}, {Model.Tasks.ArithmeticTask.MaxTerms}]");
        if (EvalEvery < 0) throw new ArgumentException($"eval_every: {EvalEvery}, must be >= 0 (0 = no evaluation after iterations)");
        if (!(EvalTemperature >= 0) || !double.IsFinite(EvalTemperature)) throw new ArgumentException($"eval_temperature: {EvalTemperature}, must be a finite number >= 0");
        if (DraftRefreshSteps < 0) throw new ArgumentException($"draft_refresh_steps: {DraftRefreshSteps}, must be >= 0");
        if (!IsDraftRefreshTolerance(DraftRefreshTolerance)) throw new ArgumentException($"draft_refresh_tolerance: {DraftRefreshTolerance}, must be in [-1, 1] (-1 distils every iteration)");
        if (Threads < 0) throw new ArgumentException($"threads: {Threads}, must be >= 0");
        if (!(Temperature >= 0) || !double.IsFinite(Temperature)) throw new ArgumentException($"temperature: {Temperature}, must be a finite number >= 0");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top_p: {TopP}, must be in (0, 1]");
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate)) throw new ArgumentException($"learning_rate: {LearningRate}, must be > 0");
        if (!(DraftLearningRate > 0) || !double.IsFinite(DraftLearningRate)) throw new ArgumentException($"draft_learning_rate: {DraftLearningRate}, must be > 0");
        if (!(KlBeta >= 0) || !double.IsFinite(KlBeta)) throw new ArgumentException($"kl_beta: {KlBeta}, must be >= 0");
        if (!(Clip > 0 && Clip < 1)) throw new ArgumentException($"clip: {Clip}, must be in (0, 1)");
        if (!(MaxGradNorm > 0)) throw new ArgumentException($"max_grad_norm: {MaxGradNorm}, must be > 0");
        if (!(CriticLearningRate > 0) || !double.IsFinite(CriticLearningRate)) throw new ArgumentException($"critic_learning_rate: {CriticLearningRate}, must be > 0");
        if (!(Gamma >= 0 && Gamma <= 1)) throw new ArgumentException($"gamma: {Gamma}, must be in [0, 1]");
        if (!(GaeLambda >= 0 && GaeLambda <= 1)) throw new ArgumentException($"gae_lambda: {GaeLambda}, must be in [0, 1]");
        if (!(ValueClip > 0) || !double.IsFinite(ValueClip)) throw new ArgumentException($"value_clip: {ValueClip}, must be > 0");
        if (!(ValueCoef > 0) || !double.IsFinite(ValueCoef)) throw new ArgumentException($"value_coef: {ValueCoef}, must be > 0");
        if (!(EntropyCoef >= 0) || !double.IsFinite(EntropyCoef)) throw new ArgumentException($"entropy_coef: {EntropyCoef}, must be >= 0");
        if (ModelSet is not null && !Model.Pretraining.DefaultModels.SetNames.Contains(ModelSet))
            throw new ArgumentException($"model_set: '{ModelSet}' is not one of {string.Join(", ", Model.Pretraining.DefaultModels.SetNames)}");
        if (ModelSet is not null && Policy is not null) throw new ArgumentException($"model_set {ModelSet} and policy: both name the policy; give one of them");
        _ = DenseKind;
        RewardRule.Parse(Reward);
    }
}
