using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Tasks;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// An endless stream of right-padded language-model batches of fresh task samples (prompt + reference response +
/// EOS), bucketed by length: a pool of samples is sorted by length and cut into batches of about
/// <c>tokensPerBatch</c> tokens (padding included), and the batches are shuffled. Samples longer than
/// <c>maxTokens</c> input tokens are cut (their tail is not trained on). The loss covers the response and EOS only.
/// Deterministic for a given seed.
/// </summary>
internal sealed class TaskBatches
{
    /// <summary>How many batches one pool of samples is cut into (wider pools bucket better, but cost memory).</summary>
    private const int BatchesPerPool = 16;

    private readonly ArithmeticTask _task;
    private readonly Random _shuffle;
    private readonly TextTokenizer _tokenizer;
    private readonly int _maxTokens, _tokensPerBatch, _eos, _pad;
    private readonly Queue<LanguageModelBatch> _ready = new();

    public TaskBatches(TextTokenizer tokenizer, int seed, int maxTokens, int tokensPerBatch)
    {
        if (maxTokens < 2) throw new ArgumentException($"max training tokens must be >= 2, got {maxTokens}", nameof(maxTokens));
        if (tokensPerBatch < maxTokens) throw new ArgumentException($"tokens per batch {tokensPerBatch} must be >= max training tokens {maxTokens}", nameof(tokensPerBatch));
        _tokenizer = tokenizer;
        _eos = tokenizer.EosId ?? throw new ArgumentException("the tokenizer has no EOS token", nameof(tokenizer));
        _pad = tokenizer.PadId ?? _eos;
        _task = new ArithmeticTask(seed);
        _shuffle = new Random(seed ^ 0x5EED);
        _maxTokens = maxTokens;
        _tokensPerBatch = tokensPerBatch;
    }

    public LanguageModelBatch Next()
    {
        if (_ready.Count == 0) Refill();
        return _ready.Dequeue();
    }

    /// <summary>The token sequence of one sample (prompt, response, EOS) and its prompt length.</summary>
    public static (int[] Ids, int PromptLength) Encode(TextTokenizer tokenizer, TaskSample sample, int eos)
    {
        var prompt = tokenizer.Encode(sample.Prompt);
        var response = tokenizer.Encode(sample.ReferenceResponse);
        var ids = new int[prompt.Length + response.Length + 1];
        prompt.CopyTo(ids, 0);
        response.CopyTo(ids, prompt.Length);
        ids[^1] = eos;
        return (ids, prompt.Length);
    }

    private void Refill()
    {
        var pool = new List<(int[] Ids, int PromptLength)>();
        long tokens = 0;
        while (tokens < (long)BatchesPerPool * _tokensPerBatch)
        {
            var (ids, promptLength) = Encode(_tokenizer, _task.Next(), _eos);
            if (ids.Length > _maxTokens + 1) ids = ids[..(_maxTokens + 1)];
            if (promptLength >= ids.Length - 1) continue; // nothing left to learn from after the cut
            pool.Add((ids, promptLength));
            tokens += ids.Length - 1;
        }
        var sorted = pool.Select((s, i) => (s, i)).OrderBy(x => x.s.Ids.Length).ThenBy(x => x.i).Select(x => x.s).ToList();
        var batches = new List<LanguageModelBatch>();
        var current = new List<(int[] Ids, int PromptLength)>();
        foreach (var s in sorted)
        {
            // Sorted ascending: this sample is the longest so far, so the padded size is (count + 1) · its length.
            if (current.Count > 0 && (current.Count + 1) * (s.Ids.Length - 1) > _tokensPerBatch)
            {
                batches.Add(LanguageModelBatch.RightPadded(current, _pad));
                current.Clear();
            }
            current.Add(s);
        }
        if (current.Count > 0) batches.Add(LanguageModelBatch.RightPadded(current, _pad));
        for (int i = batches.Count - 1; i > 0; i--)
        {
            int j = _shuffle.Next(i + 1);
            (batches[i], batches[j]) = (batches[j], batches[i]);
        }
        foreach (var b in batches) _ready.Enqueue(b);
    }
}
