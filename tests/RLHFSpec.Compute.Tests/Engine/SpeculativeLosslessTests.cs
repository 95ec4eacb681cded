using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Tests.Statistics;
using RLHFSpec.Compute.Drafting;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The lossless proof of the verify kernel, end to end: a mini speculative-decoding loop over a synthetic target
/// and draft model (vocabulary 6) drafts chains or trees, verifies them with the kernel, commits the accepted
/// tokens and the recovered/bonus token, and repeats until 3 tokens are out. Over 100k samples (distinct sample
/// ids, one seed) the joint distribution of those 3 tokens must match the exactly enumerated target joint
/// (χ², p &gt; 1e-4; the run is seeded, so the verdict is reproducible), and must be clearly distinguishable
/// from the draft model's joint (so the test has the power to catch a verifier that just passes drafts through).
/// Greedy: the speculative output equals plain greedy decoding token for token.
/// </summary>
public class SpeculativeLosslessTests
{
    public enum Proposal { ChainQ, TreeQ, ChainNoQ, TreeTopK, Empty, Mixed }

    private const int Vocab = 6, Length = 3, Chunk = 4096;
    private static readonly int[] Prompt = [3, 1];
    private static readonly SyntheticModel Target = new(Vocab, salt: 0xC0FFEE);
    private static readonly SyntheticModel Draft = new(Vocab, salt: 0xD7AF7, basis: Target, noise: 1.5f);

    private readonly record struct DraftTree(int[] Tokens, int[] Parents, DraftKind Kind);

    [TestCase("cpu", Proposal.ChainQ, 1f, 0, 1f)]
    [TestCase("cpu", Proposal.ChainQ, 0.6f, 0, 1f)]
    [TestCase("cpu", Proposal.ChainQ, 1f, 0, 0.8f)]
    [TestCase("cpu", Proposal.TreeQ, 1f, 0, 1f)]
    [TestCase("cpu", Proposal.TreeQ, 0.6f, 0, 1f)]
    [TestCase("cpu", Proposal.ChainNoQ, 1f, 0, 1f)]
    [TestCase("cpu", Proposal.ChainNoQ, 0.6f, 0, 1f)]
    [TestCase("cpu", Proposal.TreeTopK, 1f, 0, 1f)]
    [TestCase("cpu", Proposal.TreeTopK, 0.6f, 0, 1f)]
    [TestCase("cpu", Proposal.Empty, 1f, 0, 1f)]
    [TestCase("cpu", Proposal.Mixed, 0.8f, 4, 0.9f)]
    [TestCase("cpu", Proposal.TreeQ, 1f, 4, 0.85f)]
    [TestCase("cpu", Proposal.ChainNoQ, 0.6f, 0, 0.9f)]
    public void SampledOutputFollowsTheTargetDistribution(string backend, Proposal proposal, float temperature, int topK, float topP) =>
        CheckDistribution(Backends.Get(backend), proposal, temperature, topK, topP, samples: 100_000);

    [TestCase(Proposal.TreeQ, 1f)]
    [TestCase(Proposal.Mixed, 0.6f)]
    [TestCase(Proposal.TreeTopK, 0.6f)]
    public void SampledOutputFollowsTheTargetDistributionOnVulkan(Proposal proposal, float temperature) =>
        CheckDistribution(Backends.Vulkan, proposal, temperature, 0, 1f, samples: 30_000);

    [Test]
    public void GreedySpeculativeOutputEqualsPlainGreedy([Values("cpu", "vulkan")] string backendName, [Values] Proposal proposal)
    {
        var backend = Backends.Get(backendName);
        const int samples = 300, tokens = 12;
        var prompts = Enumerable.Range(0, samples).Select(i => new List<int> { i % Vocab, i / Vocab % Vocab, 5 }).ToArray();
        var expected = prompts.Select(p =>
        {
            var seq = new List<int>(p);
            for (int t = 0; t < tokens; t++)
            {
                var l = Target.Logits(seq.ToArray());
                seq.Add(Array.IndexOf(l, l.Max()));
            }
            return seq.Skip(p.Count).ToArray();
        }).ToArray();
        var got = Generate(backend, proposal, SamplingParams.Greedy(0, 0), prompts, tokens, seed: 1);
        for (int i = 0; i < samples; i++)
            Assert.That(got[i], Is.EqualTo(expected[i]), $"sample {i}");
    }

    private static void CheckDistribution(ComputeBackend backend, Proposal proposal, float temperature, int topK, float topP, int samples)
    {
        var template = SamplingParams.Random(temperature, seed: 0x5EED, sampleId: 0, position: 0, topK: topK, topP: topP);
        var prompts = Enumerable.Range(0, samples).Select(_ => new List<int>(Prompt)).ToArray();
        var outputs = Generate(backend, proposal, template, prompts, Length, seed: 7);

        var counts = new long[Vocab * Vocab * Vocab];
        foreach (var o in outputs) counts[(o[0] * Vocab + o[1]) * Vocab + o[2]]++;
        var target = Joint(Target, template);
        var (chi2, dof, p) = ChiSquare.Test(counts, target);
        Assert.That(p, Is.GreaterThan(1e-4), $"emitted tokens do not follow the target: χ² = {chi2:F1}, dof = {dof}, p = {p:E2}");
        var (chi2Draft, _, pDraft) = ChiSquare.Test(counts, Joint(Draft, template));
        Assert.That(pDraft, Is.LessThan(1e-6), $"test lacks power: the draft joint fits too (χ² = {chi2Draft:F1})");
    }

    /// <summary>Exact joint distribution of the first <see cref="Length"/> tokens after the prompt.</summary>
    private static double[] Joint(SyntheticModel model, SamplingParams warp)
    {
        var joint = new double[Vocab * Vocab * Vocab];
        for (int a = 0; a < Vocab; a++)
        {
            double pa = Warp.Probabilities(model.Logits([.. Prompt]), warp)[a];
            var pb = Warp.Probabilities(model.Logits([.. Prompt, a]), warp);
            for (int b = 0; b < Vocab; b++)
            {
                var pc = Warp.Probabilities(model.Logits([.. Prompt, a, b]), warp);
                for (int c = 0; c < Vocab; c++) joint[(a * Vocab + b) * Vocab + c] = pa * pb[b] * pc[c];
            }
        }
        return joint;
    }

    /// <summary>Speculative decoding of <paramref name="tokens"/> tokens for every prompt, batched through the kernel.</summary>
    private static int[][] Generate(ComputeBackend backend, Proposal proposal, SamplingParams template, List<int>[] prompts, int tokens, int seed)
    {
        int n = prompts.Length;
        var sequences = prompts.Select(p => new List<int>(p)).ToArray();
        var generated = new int[n];
        var hostRandom = Enumerable.Range(0, n).Select(i => new Random(seed * 1_000_003 + i)).ToArray();
        var active = Enumerable.Range(0, n).ToList();
        using var targetBuffer = backend.Allocate<float>((long)Chunk * 5 * Vocab, "target logits");
        using var draftBuffer = backend.Allocate<float>((long)Chunk * 5 * Vocab, "draft logits");
        while (active.Count > 0)
        {
            foreach (var chunk in active.Chunk(Chunk))
            {
                int s = chunk.Length;
                var trees = new DraftTree[s];
                var parameters = new SamplingParams[s];
                for (int k = 0; k < s; k++)
                {
                    int i = chunk[k];
                    var sp = template;
                    sp.SampleId = (uint)i;
                    sp.Position = sequences[i].Count;
                    parameters[k] = sp;
                    var which = proposal == Proposal.Mixed ? (Proposal)(i % 5) : proposal;
                    trees[k] = Propose(which, sequences[i], sp, hostRandom[i]);
                }
                var offsets = new int[s + 1];
                for (int k = 0; k < s; k++) offsets[k + 1] = offsets[k] + trees[k].Tokens.Length;
                int rows = offsets[s] + s;
                var targetRows = new float[rows * Vocab];
                var draftRows = new float[rows * Vocab];
                for (int k = 0; k < s; k++)
                {
                    var tree = trees[k];
                    int row = offsets[k] + k;
                    for (int node = -1; node < tree.Tokens.Length; node++, row++)
                    {
                        var context = ContextOf(sequences[chunk[k]], tree, node);
                        Target.Logits(context, targetRows.AsSpan(row * Vocab, Vocab));
                        Draft.Logits(context, draftRows.AsSpan(row * Vocab, Vocab));
                    }
                }
                targetBuffer.Write(targetRows);
                draftBuffer.Write(draftRows);
                var batch = new VerifyBatch
                {
                    NodeOffsets = offsets,
                    DraftTokens = trees.SelectMany(t => t.Tokens).ToArray(),
                    Parents = trees.SelectMany(t => t.Parents).ToArray(),
                    Params = parameters,
                    Kinds = trees.Select(t => t.Kind).ToArray(),
                    VocabSize = Vocab,
                };
                var accepted = new int[s];
                var acceptedNodes = new int[offsets[s]];
                var next = new int[s];
                var logProbs = new float[rows];
                backend.Verify(batch, targetBuffer, draftBuffer,
                    new VerifyOutputs { AcceptedCount = accepted, AcceptedNodes = acceptedNodes, NextToken = next, LogProbs = logProbs });
                for (int k = 0; k < s; k++)
                {
                    int i = chunk[k];
                    for (int j = 0; j < accepted[k]; j++)
                        sequences[i].Add(trees[k].Tokens[acceptedNodes[offsets[k] + j]]);
                    sequences[i].Add(next[k]);
                    generated[i] += accepted[k] + 1;
                }
            }
            active.RemoveAll(i => generated[i] >= tokens);
        }
        return sequences.Select((seq, i) => seq.Skip(prompts[i].Count).Take(tokens).ToArray()).ToArray();
    }

    /// <summary>The sequence followed by the draft path from the root to <paramref name="node"/> (−1 = root).</summary>
    private static int[] ContextOf(List<int> sequence, DraftTree tree, int node)
    {
        var path = new List<int>();
        for (int v = node; v >= 0; v = tree.Parents[v]) path.Add(tree.Tokens[v]);
        path.Reverse();
        return [.. sequence, .. path];
    }

    private static DraftTree Propose(Proposal proposal, List<int> sequence, SamplingParams warp, Random random)
    {
        double[] Q(params int[] path) => Warp.Probabilities(Draft.Logits([.. sequence, .. path]), warp);
        switch (proposal)
        {
            case Proposal.ChainQ:
            {
                int a = Warp.Draw(Q(), random), b = Warp.Draw(Q(a), random), c = Warp.Draw(Q(a, b), random);
                return new([a, b, c], [-1, 0, 1], DraftKind.Sampled);
            }
            case Proposal.TreeQ:
            {
                // Two i.i.d. children of the root, each with one sampled child (SpecInfer).
                int a = Warp.Draw(Q(), random), b = Warp.Draw(Q(), random);
                int aa = Warp.Draw(Q(a), random), ba = Warp.Draw(Q(b), random);
                return new([a, b, aa, ba], [-1, -1, 0, 1], DraftKind.Sampled);
            }
            case Proposal.ChainNoQ:
            {
                // Model-free style: a deterministic guess with no q (here the draft's argmax chain).
                int a = Warp.ArgMax(Q()), b = Warp.ArgMax(Q(a));
                return new([a, b], [-1, 0], DraftKind.Deterministic);
            }
            case Proposal.TreeTopK:
            {
                var q = Q();
                int first = Warp.ArgMax(q);
                q[first] = -1;
                int second = Warp.ArgMax(q);
                return new([first, second, Warp.ArgMax(Q(first)), Warp.ArgMax(Q(second))], [-1, -1, 0, 1], DraftKind.Deterministic);
            }
            case Proposal.Empty:
                return new([], [], DraftKind.Deterministic);
            default:
                throw new ArgumentOutOfRangeException(nameof(proposal));
        }
    }
}
