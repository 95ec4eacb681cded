using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;
using RLHFSpec.Compute.Model.Transformer;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// A scalar-head decoder with its weights and ONNX Runtime sessions: PPO's critic, and the shape of a reward model.
/// The weights (one <see cref="TensorArena"/>: the policy's trunk names plus score.weight [1, H]) are updated in
/// place by an optimizer; <see cref="Values(SequenceBatch)"/> reads one scalar per position, <see cref="AtLastToken"/>
/// picks each row's last real position, <see cref="ValueLossGradients"/> is PPO's clipped value loss with gradients.
/// Saved and loaded in Hugging Face layout (LlamaForSequenceClassification / Qwen2ForSequenceClassification,
/// num_labels 1); a causal-LM checkpoint loads as a value model with its trunk and a zero score head.
/// </summary>
public sealed class ValueModel : IDisposable
{
    private readonly OnnxSession _values;
    private OnnxSession? _loss, _preference;
    private (double Clip, double Coefficient) _lossSettings;
    private double _preferenceL2;

    private ValueModel(ModelConfig config, OnnxSessionOptions options)
    {
        Config = config.AsScalarHead();
        Spec = TransformerWeights.SpecOf(config);
        Options = options;
        Weights = new TensorArena(ValueModelGraph.Tensors(Spec));
        try { _values = new OnnxSession(ValueModelGraph.ValuesGraph(Spec, ElementType.Float).ToBytes(), options); }
        catch
        {
            Weights.Dispose();
            throw;
        }
    }

    /// <summary>The config it is saved with (the trunk's, as a one-label sequence classifier).</summary>
    public ModelConfig Config { get; }
    public DecoderGraphSpec Spec { get; }
    public OnnxSessionOptions Options { get; }

    /// <summary>The weights by Hugging Face name (trunk + <see cref="ValueModelGraph.ScoreWeight"/>).</summary>
    public TensorArena Weights { get; }

    /// <summary>
    /// A value model from a checkpoint: a scalar-head one (score.weight [1, H]) or a causal LM, whose trunk is taken
    /// and whose head starts at zero (so the first values are 0 and the critic learns its head from there).
    /// </summary>
    public static ValueModel Load(Checkpoint checkpoint, OnnxSessionOptions options)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (checkpoint.Config.IsSequenceClassifier && checkpoint.Config.NumLabels != 1)
            throw new InvalidDataException($"{checkpoint.Folder}: config.json field 'num_labels' is {checkpoint.Config.NumLabels}; a value model has one");
        var model = new ValueModel(checkpoint.Config, options);
        try
        {
            foreach (var name in model.Weights.Names)
            {
                var target = model.Weights.Span(name);
                if (name == ValueModelGraph.ScoreWeight && !checkpoint.Weights.Contains(name)) { target.Clear(); continue; }
                if (!checkpoint.Weights.Contains(name))
                    throw new InvalidDataException($"{checkpoint.Folder}: tensor '{name}' is missing from the safetensors files");
                var data = checkpoint.Weights.ReadFloats(name);
                if (data.Length != target.Length)
                    throw new InvalidDataException($"{checkpoint.Folder}: tensor '{name}' has {data.Length} elements, a value model of this config needs {target.Length}");
                data.CopyTo(target);
            }
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Writes the model in Hugging Face layout (config with the scalar-head architecture, F32 weights).</summary>
    public void Save(string folder, TextTokenizer tokenizer)
    {
        var tensors = Weights.Names.ToDictionary(n => n, n =>
            new HostTensor(Weights.Shape(n).Select(d => checked((int)d)).ToArray(), Weights.Span(n).ToArray()));
        Checkpoint.Save(folder, Config, tensors, tokenizer, TensorDType.F32);
    }

    /// <summary>Values [B, T] at every input position of a prompt+response batch (aligned with its log-probs).</summary>
    public float[] Values(SequenceBatch batch) => Values(batch.InputIds, batch.Positions, batch.AttentionMask, batch.Batch, batch.Length);

    /// <summary>Values [B, T] of arbitrary right- or left-padded inputs: ids, positions, attention mask (1 = real) [B, T].</summary>
    public float[] Values(long[] inputIds, long[] positions, float[] attentionMask, int batch, int length)
    {
        long n = (long)batch * length;
        if (inputIds.Length != n || positions.Length != n || attentionMask.Length != n)
            throw new ArgumentException($"value model: inputs must have {batch}×{length} elements, got {inputIds.Length}, {positions.Length}, {attentionMask.Length}");
        var result = new float[n];
        using var ids = OrtTensors.Over(inputIds, batch, length);
        using var pos = OrtTensors.Over(positions, batch, length);
        using var mask = OrtTensors.Over(attentionMask, batch, length);
        using var output = OrtTensors.Over(result, batch, length);
        var inputs = Weights.Values();
        inputs[DecoderTrainingGraph.InputIds] = ids;
        inputs[DecoderTrainingGraph.PositionIds] = pos;
        inputs[DecoderTrainingGraph.AttentionMask] = mask;
        _values.Run(inputs, new Dictionary<string, OrtValue> { [ValueModelGraph.Values] = output });
        return result;
    }

    /// <summary>
    /// The value of the state after each row's last response token (where a response cut at max_new_tokens stands):
    /// the row with one more token appended puts that state at an input position. [rows].
    /// </summary>
    public float[] ValuesAfter(IReadOnlyList<(int[] Prompt, int[] Response)> rows, int pad = 0)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) return [];
        var extended = SequenceBatch.From(rows.Select(r => (r.Prompt, (int[])[.. r.Response, pad])).ToArray(), pad);
        var values = Values(extended);
        // Row i's response value k sits at input position start + k; k = T is the state after the last token.
        return Enumerable.Range(0, rows.Count).Select(i => extended.Gather(values, i)[^1]).ToArray();
    }

    /// <summary>
    /// Each row's value at its last real position (the largest t with attention mask 1): a reward model's score of the
    /// whole input. [B, T] → [B]; a row without real tokens gets NaN.
    /// </summary>
    public static float[] AtLastToken(ReadOnlySpan<float> values, ReadOnlySpan<float> attentionMask, int batch, int length)
    {
        if (values.Length != (long)batch * length || attentionMask.Length != values.Length)
            throw new ArgumentException($"AtLastToken: values ({values.Length}) and mask ({attentionMask.Length}) must be {batch}×{length}");
        var last = new float[batch];
        for (int i = 0; i < batch; i++)
        {
            last[i] = float.NaN;
            for (int t = length - 1; t >= 0; t--)
                if (attentionMask[i * length + t] != 0) { last[i] = values[i * length + t]; break; }
        }
        return last;
    }

    /// <summary>
    /// One forward and backward of PPO's clipped value loss (<see cref="ValueModelGraph.ValueLossGraph"/>) over the
    /// batch's response tokens: writes d loss / d weight into <paramref name="gradients"/> (same names as
    /// <see cref="Weights"/>); returns the loss (times <paramref name="coefficient"/>) and the values [B, T].
    /// </summary>
    public (double Loss, float[] Values) ValueLossGradients(TensorArena gradients, SequenceBatch batch, float[] oldValues, float[] returns,
        double clip, double coefficient = 1.0)
    {
        if (_loss is null || _lossSettings != (clip, coefficient))
        {
            _loss?.Dispose();
            _loss = new OnnxSession(ValueModelGraph.ValueLossGraph(Spec, ElementType.Float, clip, coefficient).ToBytes(), Options);
            _lossSettings = (clip, coefficient);
        }
        var loss = new float[1];
        var values = new float[batch.Batch * batch.Length];
        var inputs = PolicyGraphs.Inputs(Weights, batch, withTargets: false);
        using var vOld = OrtTensors.Over(oldValues, batch.Batch, batch.Length);
        using var vReturns = OrtTensors.Over(returns, batch.Batch, batch.Length);
        using var vMask = OrtTensors.Over(batch.LossMask, batch.Batch, batch.Length);
        using var vLoss = OrtTensors.Over(loss, Array.Empty<long>());
        using var vValues = OrtTensors.Over(values, batch.Batch, batch.Length);
        try
        {
            var feed = inputs.Values;
            feed[ValueModelGraph.OldValues] = vOld;
            feed[ValueModelGraph.Returns] = vReturns;
            feed[DecoderTrainingGraph.LossMask] = vMask;
            var outputs = gradients.Values(DecoderTrainingGraph.GradientPrefix);
            outputs[DecoderTrainingGraph.Loss] = vLoss;
            outputs[ValueModelGraph.Values] = vValues;
            _loss.Run(feed, outputs);
        }
        finally { inputs.Dispose(); }
        return (loss[0], values);
    }

    /// <summary>A reward model's score of each whole sequence: its value at the row's last real token. [B].</summary>
    public float[] Scores(RewardBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var values = Values(batch.InputIds, batch.Positions, batch.AttentionMask, batch.Batch, batch.Length);
        return AtLastToken(values, batch.AttentionMask, batch.Batch, batch.Length);
    }

    /// <summary>
    /// One forward and backward of the Bradley–Terry loss (<see cref="ValueModelGraph.PreferenceLossGraph"/>) over
    /// P pairs given as a batch of 2P sequences, the chosen ones first: writes d loss / d weight into
    /// <paramref name="gradients"/> (same names as <see cref="Weights"/>); returns the loss and the rewards [2P].
    /// </summary>
    public (double Loss, float[] Rewards) PreferenceLossGradients(TensorArena gradients, RewardBatch batch, double rewardL2 = 0)
    {
        ArgumentNullException.ThrowIfNull(gradients);
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Batch % 2 != 0) throw new ArgumentException($"preference loss: {batch.Batch} sequences; expected chosen and rejected of each pair (an even count)", nameof(batch));
        if (_preference is null || _preferenceL2 != rewardL2)
        {
            _preference?.Dispose();
            _preference = new OnnxSession(ValueModelGraph.PreferenceLossGraph(Spec, ElementType.Float, rewardL2).ToBytes(), Options);
            _preferenceL2 = rewardL2;
        }
        var loss = new float[1];
        var rewards = new float[batch.Batch];
        using var ids = OrtTensors.Over(batch.InputIds, batch.Batch, batch.Length);
        using var pos = OrtTensors.Over(batch.Positions, batch.Batch, batch.Length);
        using var mask = OrtTensors.Over(batch.AttentionMask, batch.Batch, batch.Length);
        using var last = OrtTensors.Over(batch.LastToken, batch.Batch, batch.Length);
        using var vLoss = OrtTensors.Over(loss, Array.Empty<long>());
        using var vRewards = OrtTensors.Over(rewards, batch.Batch);
        var inputs = Weights.Values();
        inputs[DecoderTrainingGraph.InputIds] = ids;
        inputs[DecoderTrainingGraph.PositionIds] = pos;
        inputs[DecoderTrainingGraph.AttentionMask] = mask;
        inputs[ValueModelGraph.LastToken] = last;
        var outputs = gradients.Values(DecoderTrainingGraph.GradientPrefix);
        outputs[DecoderTrainingGraph.Loss] = vLoss;
        outputs[ValueModelGraph.Rewards] = vRewards;
        _preference.Run(inputs, outputs);
        return (loss[0], rewards);
    }

    public void Dispose()
    {
        _values.Dispose();
        _loss?.Dispose();
        _preference?.Dispose();
        Weights.Dispose();
    }
}
