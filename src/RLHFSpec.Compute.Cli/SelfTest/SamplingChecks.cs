using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Cli.SelfTest;

/// <summary>sample and verify: tokens and accepted paths exactly, log-probs within 1e-4, against the references.</summary>
internal static class SamplingChecks
{
    private const double LogProbTolerance = 1e-4;

    public static IEnumerable<KernelCheck> All()
    {
        yield return new KernelCheck("sample", "64 rows x 50257 vocab, greedy / T 0.7-1.3 / top-k / top-p", Sample);
        yield return new KernelCheck("verify", "24 samples: chains, trees, empty drafts; vocab 32001; with and without q", Verify);
    }

    private static float[] Logits(Random random, int count)
    {
        // Spread like an LM head's logits, with a few strong tokens so top-p keeps small sets.
        var logits = new float[count];
        for (int i = 0; i < count; i++) logits[i] = (float)(random.NextDouble() * 6 - 3 + (random.Next(1000) == 0 ? 8 : 0));
        return logits;
    }

    private static SamplingParams Settings(Random random, int row)
    {
        int mode = random.Next(4);
        float temperature = mode == 0 ? 0f : (float)(0.7 + random.NextDouble() * 0.6);
        return SamplingParams.Random(temperature, seed: (ulong)random.Next(), sampleId: (uint)row, position: random.Next(1000),
            topK: mode == 2 ? 40 : 0, topP: mode == 3 ? 0.9f : 1f);
    }

    private static string? Sample(ComputeBackend backend, Random random, out string agreement)
    {
        agreement = "";
        const int rows = 64, vocab = 50257;
        var logits = Logits(random, rows * vocab);
        var settings = Enumerable.Range(0, rows).Select(r => Settings(random, r)).ToArray();
        var expectedTokens = new int[rows];
        var expectedLogProbs = new float[rows];
        ReferenceSampler.Sample(settings, logits, vocab, expectedTokens, expectedLogProbs);
        using var buffer = backend.Allocate<float>(logits.Length, "logits");
        buffer.Write(logits);
        var tokens = new int[rows];
        var logProbs = new float[rows];
        backend.Sample(settings, buffer, vocab, tokens, logProbs);
        double worst = 0;
        for (int r = 0; r < rows; r++)
        {
            if (tokens[r] != expectedTokens[r]) return $"row {r}: token {tokens[r]}, reference {expectedTokens[r]}";
            worst = Math.Max(worst, Math.Abs(logProbs[r] - expectedLogProbs[r]));
            if (!(worst <= LogProbTolerance)) return $"row {r}: log-prob {logProbs[r]}, reference {expectedLogProbs[r]}";
        }
        agreement = $"{rows} tokens equal, max |log-prob error| {worst:0.0e+0}";
        return null;
    }

    private static string? Verify(ComputeBackend backend, Random random, out string agreement)
    {
        agreement = "";
        const int samples = 24, vocab = 32001;
        var offsets = new int[samples + 1];
        var tokens = new List<int>();
        var parents = new List<int>();
        var kinds = new DraftKind[samples];
        var settings = new SamplingParams[samples];
        for (int s = 0; s < samples; s++)
        {
            int shape = s % 4, nodes = shape == 0 ? 0 : random.Next(1, 12);
            for (int j = 0; j < nodes; j++)
            {
                parents.Add(shape == 1 ? j - 1 : j == 0 ? -1 : random.Next(-1, j)); // chains, then random trees
                tokens.Add(random.Next(vocab));
            }
            offsets[s + 1] = tokens.Count;
            kinds[s] = random.Next(2) == 0 ? DraftKind.Sampled : DraftKind.Deterministic;
            settings[s] = Settings(random, s);
        }
        int rows = tokens.Count + samples;
        var target = Logits(random, rows * vocab);
        var draft = Logits(random, rows * vocab);
        // Make drafts plausible so paths get accepted: boost each node's token in its parent's target and draft rows.
        for (int s = 0; s < samples; s++)
            for (int j = offsets[s]; j < offsets[s + 1]; j++)
            {
                int parentRow = offsets[s] + s + (parents[j] + 1);
                target[(long)parentRow * vocab + tokens[j]] += 14f;
                draft[(long)parentRow * vocab + tokens[j]] += 14f;
            }
        var batch = new VerifyBatch
        {
            NodeOffsets = offsets, DraftTokens = tokens.ToArray(), Parents = parents.ToArray(), Params = settings, Kinds = kinds, VocabSize = vocab,
        };
        var expected = (Count: new int[samples], Nodes: new int[tokens.Count], Next: new int[samples], LogProbs: new float[rows]);
        ReferenceVerifier.Verify(batch, target, draft,
            new VerifyOutputs { AcceptedCount = expected.Count, AcceptedNodes = expected.Nodes, NextToken = expected.Next, LogProbs = expected.LogProbs });
        using var targetBuffer = backend.Allocate<float>(target.Length, "target logits");
        using var draftBuffer = backend.Allocate<float>(draft.Length, "draft logits");
        targetBuffer.Write(target);
        draftBuffer.Write(draft);
        var actual = (Count: new int[samples], Nodes: new int[tokens.Count], Next: new int[samples], LogProbs: new float[rows]);
        backend.Verify(batch, targetBuffer, draftBuffer,
            new VerifyOutputs { AcceptedCount = actual.Count, AcceptedNodes = actual.Nodes, NextToken = actual.Next, LogProbs = actual.LogProbs });
        double worst = 0;
        for (int s = 0; s < samples; s++)
        {
            if (actual.Count[s] != expected.Count[s]) return $"sample {s}: accepted {actual.Count[s]}, reference {expected.Count[s]}";
            for (int j = 0; j < actual.Count[s]; j++)
                if (actual.Nodes[offsets[s] + j] != expected.Nodes[offsets[s] + j]) return $"sample {s}: accepted path differs at step {j}";
            if (actual.Next[s] != expected.Next[s]) return $"sample {s}: next token {actual.Next[s]}, reference {expected.Next[s]}";
            for (int j = 0; j <= actual.Count[s]; j++)
            {
                int at = offsets[s] + s + j;
                worst = Math.Max(worst, Math.Abs(actual.LogProbs[at] - expected.LogProbs[at]));
                if (!(worst <= LogProbTolerance)) return $"sample {s}: log-prob {j} is {actual.LogProbs[at]}, reference {expected.LogProbs[at]}";
            }
        }
        agreement = $"{expected.Count.Sum()} accepted tokens and {samples} next tokens equal, max |log-prob error| {worst:0.0e+0}";
        return null;
    }
}
