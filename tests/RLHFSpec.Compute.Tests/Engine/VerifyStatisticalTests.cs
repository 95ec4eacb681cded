using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;
using RLHFSpec.Compute.Engine.Reference;
using RLHFSpec.Compute.Tests.Reference;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>
/// The lossless proof: a mini speculative loop (draft → verify → commit until <see cref="Length"/> tokens are emitted)
/// with a synthetic target and draft model over a small vocabulary (logits a hash of the prefix), run for many seeds
/// in lock-step batches. The joint distribution of the first <see cref="Length"/> tokens must equal the target's exact
/// joint (enumerated from <see cref="ReferenceSampler.Distribution"/>): Pearson χ², pass when p &gt; 1e-4 (seeds are
/// fixed, so the test is deterministic). The same counts must reject the draft model's joint (p &lt; 1e-6), which
/// shows the test has the power to catch a lossy verifier.
/// </summary>
public class VerifyStatisticalTests
{
    private const int V = 6;
    private const int Length = 3;
    private const ulong PromptHash = 0x1234_5678_9ABC_DEF0;

    public enum Drafting
    {
        /// <summary>A chain of 3 tokens, each sampled from q (Sampled).</summary>
        SampledChain,
        /// <summary>Two i.i.d. children of the root from q, each with one child from q (Sampled, SpecInfer).</summary>
        SampledTree,
        /// <summary>The top-2 draft tokens at the root, each with its top-1 child (Deterministic).</summary>
        TopKTree,
        /// <summary>A chain of 2 tokens from a fixed rule of the prefix, no q, like a suffix-tree proposer (Deterministic).</summary>
        SuffixChain,
    }

    [TestCase("cpu", Drafting.SampledChain, 1f, 0, 1f, 100_000)]
    [TestCase("cpu", Drafting.SampledTree, 0.6f, 0, 1f, 100_000)]
    [TestCase("cpu", Drafting.TopKTree, 1f, 0, 1f, 100_000)]
    [TestCase("cpu", Drafting.SuffixChain, 0.6f, 0, 0.9f, 100_000)]
    [TestCase("cpu", Drafting.SampledTree, 1f, 4, 0.85f, 100_000)]
    [TestCase("vulkan", Drafting.SampledTree, 1f, 0, 0.9f, 10_000)]
    [TestCase("vulkan", Drafting.TopKTree, 0.6f, 0, 1f, 20_000)]
    public void EmittedTokensFollowTheTargetJoint(string backendName, Drafting drafting, float temperature, int topK, float topP, int seeds)
    {
        var backend = Backends.Get(backendName);
        var warp = SamplingParams.Random(temperature, 0, 0, 0, topK, topP);
        var emitted = Run(backend, drafting, warp, seeds, out double meanAccepted);

        var counts = new long[Pow(V, Length)];
        foreach (var tokens in emitted) counts[Index(tokens)]++;
        var target = Joint(warp, TargetLogits);
        var (chi2, dof, p) = ChiSquare.Test(counts, target);
        TestContext.Out.WriteLine($"{drafting}: χ² = {chi2:F1}, dof = {dof}, p = {p:G3}, mean accepted per step {meanAccepted:F2}");
        Assert.That(p, Is.GreaterThan(1e-4), $"χ² = {chi2:F1} with {dof} degrees of freedom");
        Assert.That(ChiSquare.Test(counts, Joint(warp, DraftLogits)).PValue, Is.LessThan(1e-6), "the test cannot tell p from q");
        if (drafting != Drafting.SuffixChain) Assert.That(meanAccepted, Is.GreaterThan(0.3), "drafts are hardly ever accepted");
    }

    private static int Pow(int b, int e) => e == 0 ? 1 : b * Pow(b, e - 1);

    private static int Index(IReadOnlyList<int> tokens)
    {
        int index = 0;
        for (int i = 0; i < Length; i++) index = index * V + tokens[i];
        return index;
    }

    private static ulong Extend(ulong hash, int token)
    {
        ulong h = (hash ^ ((ulong)(token + 1) * 0x9E37_79B9_7F4A_7C15UL)) * 0xBF58_476D_1CE4_E5B9UL;
        return h ^ (h >> 31);
    }

    private static float Unit(ulong hash, int i, ulong salt)
    {
        ulong h = Extend(hash ^ salt, i) * 0x94D0_49BB_1331_11EBUL;
        return (float)((h >> 40) / (double)(1UL << 24));
    }

    /// <summary>Target logits after the prefix with hash <paramref name="hash"/>.</summary>
    private static void TargetLogits(ulong hash, Span<float> row)
    {
        for (int i = 0; i < V; i++) row[i] = 4f * Unit(hash, i, 1) - 2f;
    }

    /// <summary>Draft logits: the target's plus a prefix-dependent perturbation, so q ≠ p but close.</summary>
    private static void DraftLogits(ulong hash, Span<float> row)
    {
        TargetLogits(hash, row);
        for (int i = 0; i < V; i++) row[i] += 2.4f * Unit(hash, i, 2) - 1.2f;
    }

    private delegate void Model(ulong hash, Span<float> row);

    /// <summary>Exact joint of the first <see cref="Length"/> tokens under the warped <paramref name="model"/>.</summary>
    private static double[] Joint(SamplingParams warp, Model model)
    {
        var joint = new double[Pow(V, Length)];
        var row = new float[V];
        void Walk(ulong hash, int depth, int index, double prob)
        {
            if (depth == Length) { joint[index] = prob; return; }
            model(hash, row);
            var dist = ReferenceSampler.Distribution(row, warp);
            for (int t = 0; t < V; t++)
                if (dist[t] > 0) Walk(Extend(hash, t), depth + 1, index * V + t, prob * dist[t]);
        }
        Walk(PromptHash, 0, 0, 1);
        return joint;
    }

    private sealed class Node
    {
        public int Parent;     // local index, −1 = root
        public int Token;
        public ulong Hash;     // prefix hash after this node's token
        public int Depth;      // 1 for the root's children
        public int Branch;     // which root child it descends from
    }

    private sealed class Seq
    {
        public required int Id;
        public ulong Hash = PromptHash;
        public int Position;
        public readonly List<int> Tokens = new();
        public List<Node> Nodes = new();
    }

    /// <summary>Runs the speculative loop for <paramref name="seeds"/> sequences in lock-step; returns their tokens.</summary>
    private static List<int>[] Run(ComputeBackend backend, Drafting drafting, SamplingParams warp, int seeds, out double meanAccepted)
    {
        var seqs = Enumerable.Range(0, seeds).Select(i => new Seq { Id = i }).ToArray();
        var active = seqs.ToList();
        long steps = 0, acceptedTotal = 0;
        var row = new float[V];
        while (active.Count > 0)
        {
            foreach (var s in active) s.Nodes = new List<Node>();
            Draft(backend, drafting, warp, active);

            // Verify batch: per sequence the root row then one row per node.
            int samples = active.Count;
            var offsets = new int[samples + 1];
            for (int i = 0; i < samples; i++) offsets[i + 1] = offsets[i] + active[i].Nodes.Count;
            int nodes = offsets[samples], rows = nodes + samples;
            var tokens = new int[nodes];
            var parents = new int[nodes];
            var settings = new SamplingParams[samples];
            var kinds = new DraftKind[samples];
            bool sampled = drafting is Drafting.SampledChain or Drafting.SampledTree;
            var target = new float[rows * V];
            var draft = sampled ? new float[rows * V] : null;
            for (int i = 0; i < samples; i++)
            {
                var s = active[i];
                settings[i] = SamplingParams.Random(warp.Temperature, (ulong)s.Id * 0x2545F491UL + 7, (uint)s.Id, s.Position, warp.TopK, warp.TopP);
                kinds[i] = sampled ? DraftKind.Sampled : DraftKind.Deterministic;
                int rowBase = offsets[i] + i;
                for (int r = 0; r <= s.Nodes.Count; r++)
                {
                    ulong hash = r == 0 ? s.Hash : s.Nodes[r - 1].Hash;
                    TargetLogits(hash, target.AsSpan((rowBase + r) * V, V));
                    if (draft != null) DraftLogits(hash, draft.AsSpan((rowBase + r) * V, V));
                }
                for (int n = 0; n < s.Nodes.Count; n++)
                {
                    tokens[offsets[i] + n] = s.Nodes[n].Token;
                    parents[offsets[i] + n] = s.Nodes[n].Parent;
                }
            }
            using var targetBuffer = backend.Allocate<float>(target.Length, "target");
            targetBuffer.Write(target);
            using var draftBuffer = draft != null ? backend.Allocate<float>(draft.Length, "draft") : null;
            draftBuffer?.Write(draft);
            var acceptedCount = new int[samples];
            var acceptedNodes = new int[nodes];
            var next = new int[samples];
            var logProbs = new float[rows];
            backend.Verify(
                new VerifyBatch { NodeOffsets = offsets, DraftTokens = tokens, Parents = parents, Params = settings, Kinds = kinds, VocabSize = V },
                targetBuffer, draftBuffer,
                new VerifyOutputs { AcceptedCount = acceptedCount, AcceptedNodes = acceptedNodes, NextToken = next, LogProbs = logProbs });

            // Commit: accepted tokens, then the next token.
            for (int i = 0; i < samples; i++)
            {
                var s = active[i];
                for (int j = 0; j < acceptedCount[i]; j++)
                {
                    var node = s.Nodes[acceptedNodes[offsets[i] + j]];
                    s.Tokens.Add(node.Token);
                    s.Hash = node.Hash;
                }
                s.Tokens.Add(next[i]);
                s.Hash = Extend(s.Hash, next[i]);
                s.Position += acceptedCount[i] + 1;
                acceptedTotal += acceptedCount[i];
                steps++;
            }
            active.RemoveAll(s => s.Tokens.Count >= Length);
        }
        meanAccepted = acceptedTotal / (double)steps;
        return seqs.Select(s => s.Tokens).ToArray();
    }

    /// <summary>Fills each sequence's draft tree.</summary>
    private static void Draft(ComputeBackend backend, Drafting drafting, SamplingParams warp, List<Seq> active)
    {
        var row = new float[V];
        switch (drafting)
        {
            case Drafting.SampledChain:
                // Depth d's token decides position Position + d − 1, drawn from q at its parent's prefix.
                for (int depth = 1; depth <= 3; depth++)
                    SampleLevel(backend, warp, active, depth, s => depth == 1 ? [(-1, 0)] : [(s.Nodes.Count - 1, 0)]);
                break;
            case Drafting.SampledTree:
                SampleLevel(backend, warp, active, 1, _ => [(-1, 0), (-1, 1)]);
                SampleLevel(backend, warp, active, 2, _ => [(0, 0), (1, 1)]);
                break;
            case Drafting.TopKTree:
                foreach (var s in active)
                {
                    DraftLogits(s.Hash, row);
                    var top = Enumerable.Range(0, V).OrderByDescending(t => row[t]).Take(2).ToArray();
                    for (int b = 0; b < 2; b++) Add(s, -1, top[b], b);
                    for (int b = 0; b < 2; b++)
                    {
                        DraftLogits(s.Nodes[b].Hash, row);
                        Add(s, b, ReferenceSampler.Argmax(row), b);
                    }
                }
                break;
            case Drafting.SuffixChain:
                foreach (var s in active)
                {
                    Add(s, -1, (int)(s.Hash % V), 0);
                    Add(s, 0, (int)(s.Nodes[0].Hash % V), 0);
                }
                break;
        }
    }

    private static void Add(Seq s, int parent, int token, int branch)
    {
        ulong parentHash = parent < 0 ? s.Hash : s.Nodes[parent].Hash;
        int depth = parent < 0 ? 1 : s.Nodes[parent].Depth + 1;
        s.Nodes.Add(new Node { Parent = parent, Token = token, Hash = Extend(parentHash, token), Depth = depth, Branch = branch });
    }

    /// <summary>
    /// Samples one level of every sequence's tree with the sample kernel: each (parent, branch) child is drawn from
    /// q at the parent's prefix, on stream Draft + branch at the child's position, so siblings are i.i.d.
    /// </summary>
    private static void SampleLevel(ComputeBackend backend, SamplingParams warp, List<Seq> active, int depth, Func<Seq, (int Parent, int Branch)[]> children)
    {
        var requests = new List<(Seq Seq, int Parent, int Branch)>();
        foreach (var s in active)
            foreach (var (parent, branch) in children(s)) requests.Add((s, parent, branch));
        var logits = new float[requests.Count * V];
        var rows = new SamplingParams[requests.Count];
        for (int i = 0; i < requests.Count; i++)
        {
            var (s, parent, branch) = requests[i];
            DraftLogits(parent < 0 ? s.Hash : s.Nodes[parent].Hash, logits.AsSpan(i * V, V));
            rows[i] = SamplingParams.Random(warp.Temperature, (ulong)s.Id * 0x2545F491UL + 7, (uint)s.Id, s.Position + depth - 1,
                warp.TopK, warp.TopP, RngStreams.Draft + (uint)branch);
        }
        var (tokens, _) = SampleTests.Run(backend, rows, logits, V);
        for (int i = 0; i < requests.Count; i++) Add(requests[i].Seq, requests[i].Parent, tokens[i], requests[i].Branch);
    }
}
