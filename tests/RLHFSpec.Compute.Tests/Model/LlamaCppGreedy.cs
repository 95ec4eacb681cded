using LLama;
using LLama.Common;
using LLama.Native;

namespace RLHFSpec.Compute.Tests.Model;

/// <summary>
/// Greedy decoding of a GGUF file through llama.cpp (LLamaSharp and its CPU backend): all prompts prefilled in one
/// batch (a sequence id each), then one batched decode per step, argmax of each sequence's logits (first maximum on
/// ties), until a stop token or the token limit. KV cache F32 so the comparison with our F32 forward is about the
/// export, not about cache rounding; flash attention off for the same reason. Also records the smallest gap between the best and second-best logit seen, so a
/// test can refuse a comparison decided by near-ties.
/// </summary>
internal sealed class LlamaCppGreedy : IDisposable
{
    private static readonly Lazy<bool> Quiet = new(() =>
    {
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (level == LLamaLogLevel.Error) TestContext.Error.Write(message); });
        return true;
    });

    private readonly LLamaWeights _weights;
    private readonly ModelParams _params;

    public LlamaCppGreedy(string ggufPath, int contextPerSequence = 512, int maxSequences = 4)
    {
        _ = Quiet.Value;
        _params = new ModelParams(ggufPath)
        {
            ContextSize = (uint)(contextPerSequence * maxSequences),
            BatchSize = (uint)(contextPerSequence * maxSequences),
            SeqMax = (uint)maxSequences,
            KVUnified = true,
            Threads = 1,
            BatchThreads = 1,
            GpuLayerCount = 0,
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
            // Flash attention off: llama.cpp's CPU flash attention computes in half precision (logits then differ
            // from ours by ~1e-3 instead of ~1e-6), which would blur a comparison meant to check the export.
            FlashAttention = false,
        };
        _weights = LLamaWeights.LoadFromFile(_params);
    }

    public IReadOnlyDictionary<string, string> Metadata => _weights.Metadata;

    public double SmallestMargin { get; private set; } = double.PositiveInfinity;

    /// <summary>llama.cpp's tokenization of <paramref name="text"/> (no BOS, special tokens parsed).</summary>
    public int[] Tokenize(string text)
    {
        using var context = _weights.CreateContext(_params);
        return context.Tokenize(text, addBos: false, special: true).Select(t => (int)t).ToArray();
    }

    /// <summary>The logits of the last prompt token (one sequence).</summary>
    public float[] PromptLogits(int[] prompt)
    {
        using var context = _weights.CreateContext(_params);
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Length; i++) batch.Add(prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
        Assert.That(context.Decode(batch), Is.EqualTo(DecodeResult.Ok), "llama.cpp prefill");
        return context.NativeHandle.GetLogitsIth(prompt.Length - 1).ToArray();
    }

    public int[][] Generate(IReadOnlyList<int[]> prompts, int maxNewTokens, IReadOnlySet<int> stops)
    {
        using var context = _weights.CreateContext(_params);
        int n = prompts.Count;
        var outputs = Enumerable.Range(0, n).Select(_ => new List<int>()).ToArray();
        var done = new bool[n];
        var row = new int[n];
        var batch = new LLamaBatch();
        for (int s = 0; s < n; s++)
            for (int i = 0; i < prompts[s].Length; i++)
            {
                int index = batch.Add(prompts[s][i], i, (LLamaSeqId)s, i == prompts[s].Length - 1);
                if (i == prompts[s].Length - 1) row[s] = index;
            }
        while (true)
        {
            Assert.That(context.Decode(batch), Is.EqualTo(DecodeResult.Ok), "llama.cpp decode");
            for (int s = 0; s < n; s++)
            {
                if (done[s]) continue;
                int token = ArgMax(context.NativeHandle.GetLogitsIth(row[s]));
                outputs[s].Add(token);
                if (stops.Contains(token) || outputs[s].Count >= maxNewTokens) done[s] = true;
            }
            if (done.All(d => d)) break;
            batch.Clear();
            for (int s = 0; s < n; s++)
                if (!done[s]) row[s] = batch.Add(outputs[s][^1], prompts[s].Length + outputs[s].Count - 1, (LLamaSeqId)s, true);
        }
        return outputs.Select(o => o.ToArray()).ToArray();
    }

    private int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float second = float.NegativeInfinity;
        for (int v = 1; v < logits.Length; v++)
        {
            if (logits[v] > logits[best]) { second = logits[best]; best = v; }
            else if (logits[v] > second) second = logits[v];
        }
        SmallestMargin = Math.Min(SmallestMargin, logits[best] - second);
        return best;
    }

    public void Dispose() => _weights.Dispose();
}
