using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>A verify batch held in arrays, runnable on a backend or the reference.</summary>
internal sealed class VerifyCase
{
    public required int[] NodeOffsets;
    public required int[] DraftTokens;
    public required int[] Parents;
    public required SamplingParams[] Params;
    public required DraftKind[] Kinds;
    public required int Vocab;
    /// <summary>// [TotalRows, Vocab]</summary>
    public required float[] Target;
    /// <summary>// [TotalRows, Vocab] or null</summary>
    public float[]? Draft;

    public int Samples => Params.Length;
    public int TotalNodes => NodeOffsets[^1];

    public VerifyBatch Batch => new()
    {
        NodeOffsets = NodeOffsets, DraftTokens = DraftTokens, Parents = Parents, Params = Params, Kinds = Kinds, VocabSize = Vocab,
    };

    public sealed record Result(int[] AcceptedCount, int[] AcceptedNodes, int[] NextToken, float[] LogProbs)
    {
        /// <summary>Accepted local nodes of sample <paramref name="s"/>.</summary>
        public int[] Path(VerifyCase c, int s) => AcceptedNodes[c.NodeOffsets[s]..(c.NodeOffsets[s] + AcceptedCount[s])];
    }

    private Result NewResult() => new(new int[Samples], new int[TotalNodes], new int[Samples], new float[TotalNodes + Samples]);

    private static VerifyOutputs Outputs(Result r) => new()
    {
        AcceptedCount = r.AcceptedCount, AcceptedNodes = r.AcceptedNodes, NextToken = r.NextToken, LogProbs = r.LogProbs,
    };

    public Result Run(ComputeBackend backend)
    {
        using var target = backend.Allocate<float>(Target.Length, "target");
        target.Write(Target);
        using var draft = Draft != null ? backend.Allocate<float>(Draft.Length, "draft") : null;
        draft?.Write(Draft);
        var result = NewResult();
        backend.Verify(Batch, target, draft, Outputs(result));
        return result;
    }

    public Result RunReference()
    {
        var result = NewResult();
        ReferenceVerifier.Verify(Batch, Target, Draft, Outputs(result));
        return result;
    }

    /// <summary>
    /// A random batch: per sample a random tree shape (empty, chain, wide, deep, mixed) and kind; target logits random,
    /// draft logits = target + noise; each node's token drawn from the draft distribution at its parent's row, so
    /// drafts are often accepted.
    /// </summary>
    public static VerifyCase Random(System.Random rng, int samples, int vocab, int maxNodes = 8)
    {
        string[] shapes = ["empty", "chain", "wide", "deep", "mixed"];
        var offsets = new int[samples + 1];
        var parents = new List<int>();
        var settings = new SamplingParams[samples];
        var kinds = new DraftKind[samples];
        for (int s = 0; s < samples; s++)
        {
            string shape = shapes[rng.Next(shapes.Length)];
            int n = shape == "empty" ? 0 : rng.Next(1, maxNodes + 1);
            parents.AddRange(SamplingTestData.Tree(rng, shape, n));
            offsets[s + 1] = offsets[s] + n;
            settings[s] = SamplingTestData.Params(rng, vocab, (uint)rng.Next(), rng.Next(1000));
            kinds[s] = rng.Next(2) == 0 ? DraftKind.Sampled : DraftKind.Deterministic;
        }
        int rows = offsets[samples] + samples;
        var target = SamplingTestData.Logits(rng, rows, vocab, scale: 2f);
        var draft = target.Select(x => x + 0.7f * SamplingTestData.Normal(rng)).ToArray();
        var tokens = new int[offsets[samples]];
        for (int s = 0; s < samples; s++)
        {
            var q = settings[s].IsGreedy ? SamplingParams.Random(1f, 0, 0, 0) : settings[s];
            for (int i = offsets[s]; i < offsets[s + 1]; i++)
            {
                int row = offsets[s] + s + parents[i] + 1;
                var dist = ReferenceSampler.Distribution(draft.AsSpan(row * vocab, vocab), q);
                double u = rng.NextDouble(), c = 0;
                int token = 0;
                for (; token < vocab - 1; token++)
                {
                    c += dist[token];
                    if (u < c) break;
                }
                tokens[i] = token;
            }
        }
        return new VerifyCase
        {
            NodeOffsets = offsets, DraftTokens = tokens, Parents = parents.ToArray(), Params = settings, Kinds = kinds,
            Vocab = vocab, Target = target, Draft = draft,
        };
    }
}
