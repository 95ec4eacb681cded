using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Tasks;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// Measures a model on task samples with a whole-sequence logits graph (no KV cache; prompts are short):
/// teacher-forced next-token accuracy over response and EOS tokens, and exact-answer accuracy of greedy decoding
/// (the task's reward). Weights are read from the arena at each run, so it sees the latest optimizer step.
/// </summary>
internal sealed class PretrainEvaluator : IDisposable
{
    private const int BatchSize = 32;

    private readonly OnnxSession _session;
    private readonly TensorArena _weights;
    private readonly TextTokenizer _tokenizer;
    private readonly int _vocab, _eos, _pad;

    public PretrainEvaluator(DecoderGraphSpec spec, TensorArena weights, TextTokenizer tokenizer, OnnxSessionOptions options)
    {
        _session = new OnnxSession(DecoderTrainingGraph.LogitsGraph(spec, ElementType.Float).ToBytes(), options);
        _weights = weights;
        _tokenizer = tokenizer;
        _vocab = spec.VocabSize;
        _eos = tokenizer.EosId ?? throw new ArgumentException("the tokenizer has no EOS token", nameof(tokenizer));
        _pad = tokenizer.PadId ?? _eos;
    }

    /// <summary>A fixed evaluation set: task samples with at most <paramref name="maxTerms"/> terms.</summary>
    public static IReadOnlyList<TaskSample> EvaluationSet(int seed, int count, int maxTerms)
    {
        var task = new ArithmeticTask(seed);
        var list = new List<TaskSample>(count);
        while (list.Count < count)
        {
            var s = task.Next();
            if (s.Prompt.Count(c => c == '+') + 1 <= maxTerms) list.Add(s);
        }
        return list;
    }

    public double TokenAccuracy(IReadOnlyList<TaskSample> samples)
    {
        long correct = 0, total = 0;
        foreach (var chunk in samples.Chunk(BatchSize))
        {
            var batch = LanguageModelBatch.RightPadded(chunk.Select(s => TaskBatches.Encode(_tokenizer, s, _eos)).ToList(), _pad);
            var logits = Logits(batch.Ids, batch.Positions, batch.AttentionMask, batch.Batch, batch.Length);
            for (int k = 0; k < batch.Ids.Length; k++)
            {
                if (batch.LossMask[k] == 0) continue;
                total++;
                if (ArgMax(logits.AsSpan(k * _vocab, _vocab)) == batch.Targets[k]) correct++;
            }
        }
        return total == 0 ? 0 : (double)correct / total;
    }

    /// <summary>Fraction of samples whose greedy response (up to EOS or a length limit) earns reward 1.</summary>
    public double ExactAccuracy(IReadOnlyList<TaskSample> samples)
    {
        int correct = 0;
        foreach (var chunk in samples.Chunk(BatchSize))
        {
            var prompts = chunk.Select(s => _tokenizer.Encode(s.Prompt)).ToArray();
            int maxNew = chunk.Max(s => _tokenizer.Encode(s.ReferenceResponse).Length) + 8;
            var responses = Greedy(prompts, maxNew);
            for (int i = 0; i < chunk.Length; i++)
                correct += ArithmeticTask.Reward(chunk[i].Prompt, _tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(responses[i]), skipSpecialTokens: true)) > 0 ? 1 : 0;
        }
        return samples.Count == 0 ? 0 : (double)correct / samples.Count;
    }

    /// <summary>Greedy continuations of left-padded prompts, each up to (not including) its EOS.</summary>
    private List<int>[] Greedy(int[][] prompts, int maxNew)
    {
        int b = prompts.Length, p = prompts.Max(x => x.Length);
        var rows = prompts.Select(x => Enumerable.Repeat(_pad, p - x.Length).Concat(x).ToList()).ToArray();
        var outputs = prompts.Select(_ => new List<int>()).ToArray();
        var done = new bool[b];
        for (int step = 0; step < maxNew && done.Contains(false); step++)
        {
            int t = p + step;
            var ids = new long[b * t];      // [B, T]
            var positions = new long[b * t];
            var mask = new float[b * t];
            for (int r = 0; r < b; r++)
            {
                int padCount = p - prompts[r].Length;
                for (int c = 0; c < t; c++)
                {
                    ids[r * t + c] = rows[r][c];
                    positions[r * t + c] = Math.Max(0, c - padCount);
                    mask[r * t + c] = c >= padCount ? 1 : 0;
                }
            }
            var logits = Logits(ids, positions, mask, b, t); // [B, T, V]
            for (int r = 0; r < b; r++)
            {
                int next = ArgMax(logits.AsSpan(((r * t) + t - 1) * _vocab, _vocab));
                rows[r].Add(next);
                if (done[r]) continue;
                if (next == _eos) done[r] = true;
                else outputs[r].Add(next);
            }
        }
        return outputs;
    }

    private float[] Logits(long[] ids, long[] positions, float[] mask, int b, int t)
    {
        using var idsValue = OrtTensors.Over(ids, b, t);
        using var positionsValue = OrtTensors.Over(positions, b, t);
        using var maskValue = OrtTensors.Over(mask, b, t);
        var inputs = _weights.Values();
        inputs[DecoderTrainingGraph.InputIds] = idsValue;
        inputs[DecoderTrainingGraph.PositionIds] = positionsValue;
        inputs[DecoderTrainingGraph.AttentionMask] = maskValue;
        using var outs = _session.Run(inputs, new[] { DecoderTrainingGraph.LogitsOutput });
        return outs.First().GetTensorDataAsSpan<float>().ToArray();
    }

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }

    public void Dispose() => _session.Dispose();
}
