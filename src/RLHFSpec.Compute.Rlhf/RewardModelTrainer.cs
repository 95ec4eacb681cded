using System.Diagnostics;
using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Trains a reward model from preference pairs (<c>rlhfspec train-rm</c>): a scalar-head decoder started from a base
/// checkpoint (a policy's trunk with a zero head, or an earlier reward model), Bradley–Terry loss through the
/// autodiff, AdamW; held-out pairwise accuracy before training and after each epoch; the model written in HF layout
/// with a <see cref="SummaryFile"/> into a temporary folder that is renamed into place, so a failed run leaves
/// nothing under the output name.
/// </summary>
public static class RewardModelTrainer
{
    public const string SummaryFile = "train_rm.json";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <param name="pairsSource">Where the pairs came from, for the summary (a file path or a description).</param>
    /// <param name="epochDone">Called after each epoch (for progress lines).</param>
    /// <param name="trained">Called with the trained model before it is saved (tests compare its scores with the saved one's).</param>
    public static RewardTrainingSummary Train(IReadOnlyList<PreferencePair> pairs, string pairsSource, string baseFolder, string outFolder,
        RewardTrainingOptions options, Action<RewardEpoch>? epochDone = null, Action<RewardModel>? trained = null)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (pairs.Count == 0) throw new InvalidDataException($"{pairsSource}: no pairs");
        CheckSomePreference(pairs, pairsSource);
        var clock = Stopwatch.StartNew();
        var session = new OnnxSessionOptions { Provider = OnnxSessionOptions.ParseProvider(options.Ep), IntraOpThreads = options.Threads };
        using var checkpoint = Checkpoint.Load(baseFolder);
        if (checkpoint.Config.IsSequenceClassifier && checkpoint.Config.NumLabels != 1)
            throw new InvalidDataException($"--model '{baseFolder}': config.json field 'num_labels' is {checkpoint.Config.NumLabels}; a reward model has one");
        using var rm = new RewardModel(ValueModel.Load(checkpoint, session), checkpoint.Tokenizer, checkpoint.StopTokenIds());

        var (chosen, rejected, dropped) = Encode(rm, pairs, pairsSource, checkpoint.Config.MaxPositionEmbeddings);
        var random = new Random(options.Seed);
        var data = Split(chosen, rejected, random, options, pairsSource);

        using var gradients = new TensorArena(rm.Model.Weights.Names.Select(n => (n, rm.Model.Weights.Shape(n))));
        var optimizer = new AdamW(new AdamWOptions
        {
            Schedule = LearningRateSchedule.Constant(options.LearningRate), WeightDecay = options.WeightDecay, MaxGradNorm = options.MaxGradNorm,
        });
        foreach (var name in rm.Model.Weights.Names) optimizer.Add(name, rm.Model.Weights.Memory(name), gradients.Memory(name), DecoderGraphSpec.Decays(name));

        var initial = Evaluate(rm, chosen, rejected, data.Eval, options.BatchSize);
        var epochs = new List<RewardEpoch>();
        for (int epoch = 1; epoch <= options.Epochs; epoch++)
        {
            var done = TrainEpoch(rm, gradients, optimizer, data, epoch, random, options, checkpoint.Tokenizer.PadId ?? 0);
            epochs.Add(done);
            epochDone?.Invoke(done);
        }

        var summary = new RewardTrainingSummary
        {
            Base = Path.GetFullPath(baseFolder), Pairs = pairsSource, TrainPairs = data.Train.Length, EvalPairs = data.Eval.Length, DroppedIdentical = dropped,
            InitialEvalAccuracy = initial.Accuracy, InitialEvalLoss = initial.Loss, Epochs = epochs, Options = options,
            Steps = optimizer.Step, Seconds = clock.Elapsed.TotalSeconds,
        };
        trained?.Invoke(rm);
        Save(rm, outFolder, summary);
        return summary;
    }

    /// <summary>Token ids of every pair; identical chosen/rejected carry no preference and are left out (counted as dropped).</summary>
    private static (List<int[]> Chosen, List<int[]> Rejected, int Dropped) Encode(RewardModel rm, IReadOnlyList<PreferencePair> pairs, string pairsSource, int maxLength)
    {
        var chosen = new List<int[]>();
        var rejected = new List<int[]>();
        int dropped = 0;
        foreach (var pair in pairs)
        {
            int[] c = rm.Sequence(pair.Prompt, pair.Chosen), r = rm.Sequence(pair.Prompt, pair.Rejected);
            foreach (var (ids, field) in new[] { (c, "chosen"), (r, "rejected") })
            {
                if (ids.Length > maxLength)
                    throw new InvalidDataException($"{pair.Origin}: prompt + \"{field}\" is {ids.Length} tokens, longer than the model's max_position_embeddings {maxLength}");
                if (ids.Length == 0) throw new InvalidDataException($"{pair.Origin}: prompt + \"{field}\" has no tokens");
            }
            if (c.AsSpan().SequenceEqual(r)) { dropped++; continue; }
            chosen.Add(c);
            rejected.Add(r);
        }
        if (chosen.Count == 0)
            throw new InvalidDataException($"{pairsSource}: in every pair \"chosen\" equals \"rejected\"; there is no preference to learn");
        return (chosen, rejected, dropped);
    }

    /// <summary>The encoded pairs and their split: indices of the training pairs and of the held-out pairs.</summary>
    private sealed record PreferenceData(List<int[]> Chosen, List<int[]> Rejected, int[] Train, int[] Eval);

    /// <summary>A seeded shuffle of the pairs split into held-out (<c>eval_fraction</c>, at least one when above 0) and training pairs.</summary>
    private static PreferenceData Split(List<int[]> chosen, List<int[]> rejected, Random random, RewardTrainingOptions options, string pairsSource)
    {
        var shuffled = Enumerable.Range(0, chosen.Count).OrderBy(_ => random.Next()).ToArray();
        int evalCount = options.EvalFraction > 0 ? Math.Max(1, (int)Math.Round(chosen.Count * options.EvalFraction)) : 0;
        if (chosen.Count - evalCount < 1)
            throw new InvalidDataException($"{pairsSource}: {chosen.Count} usable pair(s) cannot be split into training and held-out pairs (--eval-fraction {options.EvalFraction}); give more pairs or --eval-fraction 0");
        return new PreferenceData(chosen, rejected, shuffled[evalCount..], shuffled[..evalCount]);
    }

    /// <summary>One epoch over the training pairs in a seeded order, then the held-out evaluation.</summary>
    private static RewardEpoch TrainEpoch(RewardModel rm, TensorArena gradients, AdamW optimizer, PreferenceData data, int epoch, Random random,
        RewardTrainingOptions options, int pad)
    {
        var epochClock = Stopwatch.StartNew();
        double lossSum = 0;
        int steps = 0;
        foreach (var rows in data.Train.OrderBy(_ => random.Next()).Chunk(options.BatchSize))
        {
            var batch = RewardBatch.From(rows.Select(i => data.Chosen[i]).Concat(rows.Select(i => data.Rejected[i])).ToArray(), pad);
            var (loss, _) = rm.Model.PreferenceLossGradients(gradients, batch, options.RewardL2);
            double norm = optimizer.Update();
            if (!double.IsFinite(norm) || !double.IsFinite(loss))
                throw new InvalidOperationException($"epoch {epoch}, step {steps + 1}: non-finite loss {loss} or gradient norm {norm}; lower --learning-rate");
            lossSum += loss;
            steps++;
        }
        var (accuracy, evalLoss) = Evaluate(rm, data.Chosen, data.Rejected, data.Eval, options.BatchSize);
        return new RewardEpoch(epoch, lossSum / steps, accuracy, evalLoss, epochClock.Elapsed.TotalSeconds);
    }

    /// <summary>Pairs whose chosen text equals the rejected one everywhere teach nothing: an error naming the source.</summary>
    public static void CheckSomePreference(IReadOnlyList<PreferencePair> pairs, string pairsSource)
    {
        if (pairs.All(p => p.Chosen == p.Rejected))
            throw new InvalidDataException($"{pairsSource}: in every pair \"chosen\" equals \"rejected\"; there is no preference to learn");
    }

    /// <summary>Held-out pairwise accuracy (r_chosen > r_rejected; ties count ½) and mean Bradley–Terry loss; nulls without held-out pairs.</summary>
    public static (double? Accuracy, double? Loss) Evaluate(RewardModel rm, IReadOnlyList<int[]> chosen, IReadOnlyList<int[]> rejected, IReadOnlyList<int> rows, int batchSize)
    {
        if (rows.Count == 0) return (null, null);
        var scores = rm.Score(rows.Select(i => chosen[i]).Concat(rows.Select(i => rejected[i])).ToArray(), 2 * batchSize);
        double correct = 0, loss = 0;
        for (int k = 0; k < rows.Count; k++)
        {
            double margin = (double)scores[k] - scores[rows.Count + k];
            correct += margin > 0 ? 1 : margin == 0 ? 0.5 : 0;
            loss += Softplus(-margin);
        }
        return (correct / rows.Count, loss / rows.Count);
    }

    /// <summary>log(1 + e^x) without overflow: −log σ(m) = softplus(−m).</summary>
    public static double Softplus(double x) => Math.Max(x, 0) + Math.Log(1 + Math.Exp(-Math.Abs(x)));

    /// <summary>Writes the model and the summary into a temporary sibling folder, then renames it to <paramref name="outFolder"/> (an existing one is replaced only then).</summary>
    private static void Save(RewardModel rm, string outFolder, RewardTrainingSummary summary) =>
        AtomicFile.WriteFolder(outFolder, temp =>
        {
            rm.Model.Save(temp, rm.Tokenizer);
            AtomicFile.WriteText(Path.Combine(temp, SummaryFile), JsonSerializer.Serialize(summary, Json));
        });
}
