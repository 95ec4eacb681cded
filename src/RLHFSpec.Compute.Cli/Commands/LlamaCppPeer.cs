using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Native;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// llama.cpp (through LLamaSharp's CPU backend) decoding a GGUF file greedily, B sequences at once, timed per phase:
/// prefill is one <c>llama_decode</c> of every sequence's prompt (B × prompt tokens, each sequence its own copy, as
/// our prefill computes them), returning each sequence's first token; decode is one batched <c>llama_decode</c> of B
/// tokens per step plus the argmax over each sequence's logits. One context per configuration (flash attention,
/// KV cache type), reused across repeats with its memory cleared.
/// </summary>
internal sealed class LlamaCppPeer : IDisposable
{
    private static readonly Lazy<bool> Quiet = new(() =>
    {
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (level == LLamaLogLevel.Error) Console.Error.Write(message); });
        return true;
    });

    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;

    public LlamaCppPeer(string gguf, int threads, int sequences, int promptTokens, int newTokens, bool flashAttention, bool kvF16)
    {
        _ = Quiet.Value;
        int perSequence = (promptTokens + newTokens + 255) / 256 * 256;
        var p = new ModelParams(gguf)
        {
            ContextSize = (uint)(perSequence * sequences),
            BatchSize = (uint)Math.Max(512, sequences * promptTokens),
            SeqMax = (uint)sequences,
            KVUnified = true,
            Threads = threads,
            BatchThreads = threads,
            GpuLayerCount = 0,
            FlashAttention = flashAttention,
            TypeK = kvF16 ? GGMLType.GGML_TYPE_F16 : GGMLType.GGML_TYPE_F32,
            TypeV = kvF16 ? GGMLType.GGML_TYPE_F16 : GGMLType.GGML_TYPE_F32,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
        Name = $"flash attention {(flashAttention ? "on" : "off")}, KV {(kvF16 ? "f16" : "f32")}";
    }

    public string Name { get; }

    /// <summary>Greedy tokens of every sequence (exactly <paramref name="newTokens"/> each, no stop token) and the seconds of each phase.</summary>
    public (int[][] Tokens, double PrefillSeconds, double DecodeSeconds) Run(int[] prompt, int sequences, int newTokens)
    {
        _context.NativeHandle.MemoryClear(true);
        var outputs = new int[sequences][];
        for (int s = 0; s < sequences; s++) outputs[s] = new int[newTokens];
        var rows = new int[sequences];
        var batch = new LLamaBatch();
        for (int s = 0; s < sequences; s++)
            for (int i = 0; i < prompt.Length; i++)
            {
                int index = batch.Add(prompt[i], i, (LLamaSeqId)s, i == prompt.Length - 1);
                if (i == prompt.Length - 1) rows[s] = index;
            }
        long start = Stopwatch.GetTimestamp();
        Decode(batch);
        for (int s = 0; s < sequences; s++) outputs[s][0] = ArgMax(_context.NativeHandle.GetLogitsIth(rows[s]));
        double prefill = Stopwatch.GetElapsedTime(start).TotalSeconds;

        start = Stopwatch.GetTimestamp();
        for (int t = 1; t < newTokens; t++)
        {
            batch.Clear();
            for (int s = 0; s < sequences; s++) rows[s] = batch.Add(outputs[s][t - 1], prompt.Length + t - 1, (LLamaSeqId)s, true);
            Decode(batch);
            for (int s = 0; s < sequences; s++) outputs[s][t] = ArgMax(_context.NativeHandle.GetLogitsIth(rows[s]));
        }
        double decode = Stopwatch.GetElapsedTime(start).TotalSeconds;
        return (outputs, prefill, decode);
    }

    private void Decode(LLamaBatch batch)
    {
        var result = _context.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp ({Name}): llama_decode returned {result}");
        _context.NativeHandle.Synchronize();
    }

    private static int ArgMax(Span<float> logits)
    {
        int best = 0;
        for (int v = 1; v < logits.Length; v++) if (logits[v] > logits[best]) best = v;
        return best;
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
