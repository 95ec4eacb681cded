using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// Trains the default models from scratch on the arithmetic task, on the CPU: a policy of a few million
/// weights and two smaller drafts sharing its tokenizer (<see cref="ArithmeticTokenizer"/>). Each model learns the
/// reference responses of fresh task samples (next-token loss on response and EOS, AdamW with warmup and cosine
/// decay), is evaluated (teacher-forced token accuracy, greedy exact-answer accuracy on short prompts) and saved as a
/// Hugging Face checkpoint folder OUT/NAME; <see cref="PretrainSummary.FileName"/> is written last. The budgets stop
/// the policy at partial accuracy, so RLHF has room to improve it. Same seed and thread count, same weights.
/// </summary>
public static class Pretrainer
{
    public const string PolicyName = "policy", DraftSmallName = "draft-small", DraftTinyName = "draft-tiny", DraftSkipName = "draft-skip";

    /// <summary>The drafts a set may hold, in the order a choice between them lists them.</summary>
    public static IReadOnlyList<string> DraftNames { get; } = [DraftSmallName, DraftTinyName, DraftSkipName];

    /// <summary>Steps over which the reported initial and final losses are averaged: 20, or a quarter of a short run.</summary>
    private static int LossWindow(int steps) => Math.Clamp(steps / 4, 1, 20);

    /// <summary>
    /// The default models: policy (hidden 256, 4 layers, 8 query / 4 KV heads, ≈2.9 M weights), draft-small (hidden
    /// 128, 2 layers, ≈0.37 M) and draft-tiny (hidden 64, 1 layer, ≈0.05 M), all on batches of ≈512 tokens (many
    /// small steps learn faster than fewer large ones: at the same cost, on a mod-10 variant of the task, 1200 steps of
    /// 512 tokens reached 56 % exact answers where 300 steps of 2048 reached 31 %). Budgets are measured on 2 idle cores in the README
    /// ("Default models").
    /// </summary>
    public static IReadOnlyList<PretrainModelSpec> DefaultModelSpecs(TextTokenizer tokenizer) => new[]
    {
        new PretrainModelSpec
        {
            Name = PolicyName, Steps = 1200, TokensPerBatch = 512, PeakLearningRate = 3e-3, MinLearningRate = 3e-4,
            Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 256, layers: 4, heads: 8, kvHeads: 4, intermediate: 688),
        },
        new PretrainModelSpec
        {
            Name = DraftSmallName, Steps = 2000, TokensPerBatch = 512, PeakLearningRate = 3e-3, MinLearningRate = 3e-4,
            Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 128, layers: 2, heads: 4, kvHeads: 2, intermediate: 344),
        },
        new PretrainModelSpec
        {
            Name = DraftTinyName, Steps = 2000, TokensPerBatch = 512, PeakLearningRate = 5e-3, MinLearningRate = 5e-4,
            Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 64, layers: 1, heads: 4, kvHeads: 2, intermediate: 172),
        },
    };

    /// <summary>The name of the bandwidth-bound model set (<c>--set medium</c>), also its folder under the default models folder.</summary>
    public const string MediumSetName = "medium";

    /// <summary>
    /// The draft a command uses with a set when no <c>--draft</c> is given and the set has no measured choice
    /// (<see cref="SetDraftChoice"/>, <see cref="DefaultModels.SetDraftName"/>): draft-tiny for the medium set,
    /// draft-small otherwise. On the medium set made in the fifth session of 2026-12-07 draft-tiny cost a quarter to a third of draft-small per drafted
    /// token (46,528 weights against 365,184) and agreed with the policy as well (Σ min(p, q) 0.834 against 0.817), and
    /// side by side it drafted faster at batch 1 and 4; measurements and commands in the README ("The medium model set",
    /// "The set's draft").
    /// </summary>
    public static string DefaultDraftName(string? set) => set == MediumSetName ? DraftTinyName : DraftSmallName;

    /// <summary>
    /// The bandwidth-bound set (<c>--set medium</c>): the policy is the default policy of
    /// <paramref name="defaultModelsFolder"/> grown function-preservingly to hidden 512, 16 query / 8 KV heads,
    /// intermediate 1376 and 8 layers (≈23.2 M weights; <see cref="ModelGrowth"/>), then fine-tuned on the task at a
    /// lower learning rate than from scratch (it starts from a trained model); the drafts are the default set's drafts
    /// distilled from the medium policy (<see cref="DistilledDraft"/>), so they learn what it says.
    /// Budgets and measurements: README ("The medium model set").
    /// </summary>
    public static IReadOnlyList<PretrainModelSpec> MediumModelSpecs(TextTokenizer tokenizer, string defaultModelsFolder)
    {
        var defaults = DefaultModelSpecs(tokenizer);
        return new[]
        {
            new PretrainModelSpec
            {
                Name = PolicyName, Steps = 150, TokensPerBatch = 512, PeakLearningRate = 3e-4, MinLearningRate = 3e-5, WarmupSteps = 10,
                Config = PretrainModelSpec.LlamaConfig(tokenizer, hidden: 512, layers: 8, heads: 16, kvHeads: 8, intermediate: 1376),
                GrowFrom = new PretrainModelSpec.GrowthStart(Path.Combine(defaultModelsFolder, PolicyName), new ModelGrowth.GrowthFactors(2, 2, 8)),
            },
            DistilledDraft(defaults[1], defaultModelsFolder),
            DistilledDraft(defaults[2], defaultModelsFolder),
            LayerSkipDraft(defaults[0], defaultModelsFolder, layers: SkipDraftLayers),
        };
    }

    /// <summary>Layers of the medium set's layer-skip draft (of the default policy's 4).</summary>
    public const int SkipDraftLayers = 2;

    /// <summary>
    /// A medium-set draft cut from the default policy (the medium policy's own source before growth): its embedding,
    /// head and <paramref name="layers"/> of its layers at evenly spread indices, first and last kept (a layer-dropped
    /// copy, <see cref="ModelGrowth"/>), then distilled from the medium policy like the other drafts. It starts from
    /// a model that already says what the policy's source says, at a fraction of the medium policy's weights.
    /// </summary>
    private static PretrainModelSpec LayerSkipDraft(PretrainModelSpec policy, string defaultModelsFolder, int layers) => policy with
    {
        Name = DraftSkipName,
        Steps = DraftDistillSteps, PeakLearningRate = 1e-3, MinLearningRate = 1e-4, WarmupSteps = 10,
        Config = policy.Config with { NumHiddenLayers = layers },
        GrowFrom = new PretrainModelSpec.GrowthStart(Path.Combine(defaultModelsFolder, PolicyName), new ModelGrowth.GrowthFactors(1, 1, layers)),
        DistillFrom = PolicyName,
    };

    /// <summary>Steps of a medium draft's distillation from the medium policy.</summary>
    public const int DraftDistillSteps = 300;

    /// <summary>
    /// A medium-set draft: the default set's draft of that name (trained from scratch on the reference tokens; the
    /// same seed and data stream would train it again identically) copied as it is (growth by 1), then distilled from
    /// the medium policy for <see cref="DraftDistillSteps"/> steps on the task's data stream, so it learns the policy's
    /// distributions rather than the references'.
    /// </summary>
    private static PretrainModelSpec DistilledDraft(PretrainModelSpec draft, string defaultModelsFolder) => draft with
    {
        Steps = DraftDistillSteps, PeakLearningRate = 1e-3, MinLearningRate = 1e-4, WarmupSteps = 10,
        GrowFrom = new PretrainModelSpec.GrowthStart(Path.Combine(defaultModelsFolder, draft.Name), new ModelGrowth.GrowthFactors(1, 1, draft.Config.NumHiddenLayers)),
        DistillFrom = PolicyName,
    };

    /// <summary>
    /// Trains, evaluates and saves every model into <paramref name="outFolder"/>, then writes the summary. Checks the
    /// options and that the folder is writable before training anything (ArgumentException naming the problem).
    /// </summary>
    public static PretrainSummary Run(string outFolder, PretrainOptions options, IProgress<PretrainProgress>? progress = null,
        CancellationToken cancellation = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(outFolder);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var clock = Stopwatch.StartNew();
        var tokenizer = ArithmeticTokenizer.Create();
        var allModels = options.Models ?? DefaultModelSpecs(tokenizer);
        var models = allModels.ToList();
        if (options.PolicyOnly) models = models.Take(1).ToList();
        if (options.Only is { } only)
        {
            var unknown = only.Where(n => models.All(m => m.Name != n)).ToList();
            if (unknown.Count > 0)
                throw new ArgumentException($"--model {string.Join(", ", unknown)}: no such model (models: {string.Join(", ", models.Select(m => m.Name))})");
            models = models.Where(m => only.Contains(m.Name)).ToList();
        }
        if (options.Steps is { } steps) models = models.Select(m => m with { Steps = steps }).ToList();
        foreach (var m in models)
        {
            m.Validate();
            if (m.Config.VocabSize < tokenizer.VocabSize)
                throw new ArgumentException($"pretrain model {m.Name}: vocab_size {m.Config.VocabSize} < tokenizer's {tokenizer.VocabSize}");
        }
        CheckWritable(outFolder);
        var evalSet = options.EvalPrompts > 0
            ? PretrainEvaluator.EvaluationSet(unchecked(options.Seed * 31 + 17), options.EvalPrompts, options.MaxEvalTerms)
            : Array.Empty<Tasks.TaskSample>();
        var results = new List<PretrainedModel>();
        for (int i = 0; i < models.Count; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            // Seeded by the model's place in the full list, so retraining one model alone gives the same weights.
            int index = allModels.Select(m => m.Name).ToList().IndexOf(models[i].Name);
            results.Add(TrainOne(outFolder, models[i], index, tokenizer, options, evalSet, progress, cancellation));
        }
        // Models trained earlier into the same folder with the same tokenizer keep their entries.
        if (File.Exists(Path.Combine(outFolder, PretrainSummary.FileName)))
        {
            try
            {
                var earlier = PretrainSummary.Load(outFolder);
                if (earlier.TokenizerFingerprint == tokenizer.Fingerprint && earlier.Task == Tasks.ArithmeticTask.Version)
                {
                    var order = allModels.Select(m => m.Name).ToList();
                    results = earlier.Models.Where(m => results.All(r => r.Name != m.Name)).Concat(results)
                        .OrderBy(m => order.IndexOf(m.Name) is var i && i >= 0 ? i : int.MaxValue).ToList();
                }
            }
            catch (InvalidDataException) { }
        }
        var summary = new PretrainSummary(options.Seed, tokenizer.Fingerprint, clock.Elapsed.TotalSeconds, results, Tasks.ArithmeticTask.Version);
        summary.Save(outFolder);
        return summary;
    }

    private static PretrainedModel TrainOne(string outFolder, PretrainModelSpec model, int index, TextTokenizer tokenizer,
        PretrainOptions options, IReadOnlyList<Tasks.TaskSample> evalSet, IProgress<PretrainProgress>? progress,
        CancellationToken cancellation)
    {
        var spec = model.GraphSpec;
        using var weights = new TensorArena(spec.Tensors());
        using var grads = new TensorArena(spec.Tensors());
        var growClock = Stopwatch.StartNew();
        if (model.GrowFrom is { } grow) StartFromGrowth(weights, model, grow, unchecked(options.Seed * 7919 + index + 1));
        else Initialize(weights, spec, new Random(unchecked(options.Seed * 7919 + index + 1)));
        double growSeconds = model.GrowFrom is null ? 0 : growClock.Elapsed.TotalSeconds;
        var sessionOptions = new OnnxSessionOptions { IntraOpThreads = options.Threads };
        using var teacher = model.DistillFrom is { } teacherName ? LoadTeacher(outFolder, model, teacherName) : null;
        using var teacherSession = teacher is null ? null : new OnnxSession(DecoderTrainingGraph.LogitsGraph(teacher.Spec, ElementType.Float).ToBytes(), sessionOptions);
        var trainClock = Stopwatch.StartNew();
        var trainCpuStart = Process.GetCurrentProcess().TotalProcessorTime;
        var losses = new List<double>(model.Steps);
        long trainTokens = 0;
        var graph = teacher is null ? DecoderTrainingGraph.LanguageModelLossGraph(spec, ElementType.Float) : DecoderTrainingGraph.DistillationLossGraph(spec, ElementType.Float);
        using (var session = new OnnxSession(graph.ToBytes(), sessionOptions))
        {
            var optimizer = new AdamW(new AdamWOptions
            {
                Schedule = new LearningRateSchedule(model.PeakLearningRate, Math.Min(model.WarmupSteps, model.Steps), model.Steps, model.MinLearningRate),
                Beta2 = 0.99,
                WeightDecay = 0.01,
                MaxGradNorm = 1.0,
            });
            foreach (var n in weights.Names) optimizer.Add(n, weights.Memory(n), grads.Memory(n), DecoderGraphSpec.Decays(n));
            var loss = new float[1];
            using var lossValue = OrtTensors.Over(loss, Array.Empty<long>());
            var outputs = grads.Values(DecoderTrainingGraph.GradientPrefix);
            outputs[DecoderTrainingGraph.Loss] = lossValue;
            // Every model sees the same data stream (the drafts learn the policy's distribution).
            var batches = new TaskBatches(tokenizer, options.Seed, options.MaxTrainTokens, Math.Max(model.TokensPerBatch, options.MaxTrainTokens));
            progress?.Report(new PretrainProgress(model.Name, "train", 0, model.Steps, double.NaN));
            // The weights' values once; each step replaces the sequence inputs.
            var inputs = weights.Values();
            var teacherInputs = teacher?.Arena.Values();
            for (int step = 1; step <= model.Steps; step++)
            {
                cancellation.ThrowIfCancellationRequested();
                var batch = batches.Next();
                using var ids = OrtTensors.Over(batch.Ids, batch.Batch, batch.Length);
                using var positions = OrtTensors.Over(batch.Positions, batch.Batch, batch.Length);
                using var mask = OrtTensors.Over(batch.AttentionMask, batch.Batch, batch.Length);
                using var targets = OrtTensors.Over(batch.Targets, batch.Batch, batch.Length);
                using var lossMask = OrtTensors.Over(batch.LossMask, batch.Batch, batch.Length);
                inputs[DecoderTrainingGraph.InputIds] = ids;
                inputs[DecoderTrainingGraph.PositionIds] = positions;
                inputs[DecoderTrainingGraph.AttentionMask] = mask;
                inputs[DecoderTrainingGraph.LossMask] = lossMask;
                OrtValue? teacherValue = null;
                if (teacher is null) inputs[DecoderTrainingGraph.Targets] = targets;
                else
                {
                    // The teacher's logits of every position: // [B, T, V]
                    teacherInputs![DecoderTrainingGraph.InputIds] = ids;
                    teacherInputs[DecoderTrainingGraph.PositionIds] = positions;
                    teacherInputs[DecoderTrainingGraph.AttentionMask] = mask;
                    using var teacherOutputs = teacherSession!.Run(teacherInputs, new[] { DecoderTrainingGraph.LogitsOutput });
                    var teacherLogits = teacherOutputs.First().GetTensorDataAsSpan<float>().ToArray();
                    teacherValue = OrtTensors.Over(teacherLogits, batch.Batch, batch.Length, teacher.Spec.VocabSize);
                    inputs[DecoderTrainingGraph.TeacherLogits] = teacherValue;
                }
                using var teacherValueScope = teacherValue;
                session.Run(inputs, outputs);
                double norm = optimizer.Update();
                if (!float.IsFinite(loss[0]) || !double.IsFinite(norm))
                    throw new InvalidOperationException($"pretrain {model.Name}: step {step}: loss {loss[0]}, gradient norm {norm} (diverged; lower the learning rate)");
                losses.Add(loss[0]);
                trainTokens += batch.LossTokens;
                progress?.Report(new PretrainProgress(model.Name, "train", step, model.Steps, losses.TakeLast(LossWindow(model.Steps)).Average()));
            }
        }
        double trainSeconds = trainClock.Elapsed.TotalSeconds;
        double trainCpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - trainCpuStart).TotalSeconds;

        var evalClock = Stopwatch.StartNew();
        double tokenAccuracy = 0, exactAccuracy = 0;
        if (evalSet.Count > 0)
        {
            progress?.Report(new PretrainProgress(model.Name, "eval", model.Steps, model.Steps, losses.TakeLast(LossWindow(model.Steps)).Average()));
            using var evaluator = new PretrainEvaluator(spec, weights, tokenizer, sessionOptions);
            tokenAccuracy = evaluator.TokenAccuracy(evalSet);
            exactAccuracy = evaluator.ExactAccuracy(evalSet);
        }
        double evalSeconds = evalClock.Elapsed.TotalSeconds;

        var tensors = weights.Names.ToDictionary(n => n, n => new HostTensor(weights.Shape(n).Select(d => (int)d).ToArray(), weights.Span(n).ToArray()));
        Checkpoint.Save(Path.Combine(outFolder, model.Name), model.Config, tensors, tokenizer);
        var result = new PretrainedModel(model.Name, model.ParameterCount, model.Steps, trainTokens,
            losses.Take(LossWindow(model.Steps)).Average(), losses.TakeLast(LossWindow(model.Steps)).Average(), tokenAccuracy, exactAccuracy, evalSet.Count,
            trainSeconds, trainCpuSeconds, evalSeconds, model.DescribeSource(), growSeconds, model.PeakLearningRate, model.TokensPerBatch);
        progress?.Report(new PretrainProgress(model.Name, "saved", model.Steps, model.Steps, result.FinalLoss));
        return result;
    }

    /// <summary>
    /// Initial weights: norms 1; matrices normal with std 0.02, the projections that write into the residual stream
    /// (o_proj, down_proj) scaled by 1/√(2·layers) as in GPT-2; biases 0.
    /// </summary>
    private static void Initialize(TensorArena weights, DecoderGraphSpec spec, Random rng)
    {
        const double std = 0.02;
        double residualStd = std / Math.Sqrt(2.0 * spec.NumLayers);
        foreach (var (name, _) in spec.Tensors())
        {
            var w = weights.Span(name);
            if (name.Contains("norm", StringComparison.Ordinal)) { w.Fill(1f); continue; }
            if (name.EndsWith(".bias", StringComparison.Ordinal)) { w.Clear(); continue; }
            double s = name.Contains("o_proj", StringComparison.Ordinal) || name.Contains("down_proj", StringComparison.Ordinal) ? residualStd : std;
            for (int i = 0; i < w.Length; i++) w[i] = (float)(s * Gaussian(rng));
        }
    }

    /// <summary>
    /// The grown weights of <paramref name="grow"/>'s source copied into <paramref name="weights"/>; ArgumentException
    /// when the source is missing or grows into another shape than the spec's config.
    /// </summary>
    private static void StartFromGrowth(TensorArena weights, PretrainModelSpec model, PretrainModelSpec.GrowthStart grow, int seed)
    {
        if (!File.Exists(Path.Combine(grow.SourceFolder, ModelConfig.FileName)))
            throw new ArgumentException($"pretrain model {model.Name}: growth source {grow.SourceFolder}: no {ModelConfig.FileName} there");
        using var source = Transformer.TransformerWeights.Load(grow.SourceFolder);
        using var grown = ModelGrowth.Grow(source, grow.Factors, seed, grow.SplitNoise);
        var g = grown.Config;
        var c = model.Config;
        if ((g.VocabSize, g.HiddenSize, g.IntermediateSize, g.NumHiddenLayers, g.NumAttentionHeads, g.NumKeyValueHeads, g.HeadDim, g.TieWordEmbeddings)
            != (c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.TieWordEmbeddings))
            throw new ArgumentException($"pretrain model {model.Name}: {grow.SourceFolder} grown by width x{grow.Factors.Width}, intermediate x{grow.Factors.Intermediate}, " +
                $"layers {grow.Factors.Layers} gives hidden {g.HiddenSize}, intermediate {g.IntermediateSize}, {g.NumHiddenLayers} layers, {g.NumAttentionHeads}/{g.NumKeyValueHeads} heads, " +
                $"not the config's hidden {c.HiddenSize}, intermediate {c.IntermediateSize}, {c.NumHiddenLayers} layers, {c.NumAttentionHeads}/{c.NumKeyValueHeads} heads");
        foreach (var name in weights.Names) grown.Arena.Span(name).CopyTo(weights.Span(name));
    }

    /// <summary>
    /// The weights of <paramref name="teacherName"/>, a model trained before <paramref name="model"/> into the same
    /// output folder; ArgumentException when it is missing or its vocabulary differs.
    /// </summary>
    private static Transformer.TransformerWeights LoadTeacher(string outFolder, PretrainModelSpec model, string teacherName)
    {
        string folder = Path.Combine(outFolder, teacherName);
        if (!File.Exists(Path.Combine(folder, ModelConfig.FileName)))
            throw new ArgumentException($"pretrain model {model.Name}: distils from {teacherName}, but {folder} holds no {ModelConfig.FileName} (train {teacherName} first)");
        var teacher = Transformer.TransformerWeights.Load(folder);
        if (teacher.Spec.VocabSize != model.Config.VocabSize)
        {
            teacher.Dispose();
            throw new ArgumentException($"pretrain model {model.Name}: teacher {teacherName} has vocab_size {teacher.Spec.VocabSize}, not {model.Config.VocabSize}");
        }
        return teacher;
    }

    private static double Gaussian(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>Creates the folder and writes a probe file; ArgumentException when that fails.</summary>
    public static void CheckWritable(string folder)
    {
        try
        {
            Directory.CreateDirectory(folder);
            string probe = Path.Combine(folder, $".write-probe-{Guid.NewGuid():N}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new ArgumentException($"output folder {folder}: not writable: {e.Message}");
        }
    }
}
