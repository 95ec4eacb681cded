using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Tests.Statistics;

namespace RLHFSpec.Compute.Tests.Generation;

/// <summary>
/// Dynamic draft trees (EAGLE-2): the expansion picks the nodes of highest path probability under the budget —
/// by hand on known distributions, and against a best-first search over every prefix on a synthetic draft model —
/// with parents before children and distinct siblings; the proposer keeps the draft model's cache in step (only
/// the fed part of the accepted path is committed).
/// </summary>
public class DraftTreeBuilderTests
{
    private static float[] Row(params double[] probabilities) => probabilities.Select(p => (float)Math.Log(p)).ToArray();

    [Test]
    public void ExpansionKeepsTheBestPathsUnderTheBudgetByHand()
    {
        // topK 2, budget 5, depth 3; temperature 0 ranks by the softmax of the raw logits (here the probabilities given).
        var b = new DraftTreeBuilder(topK: 2, budget: 5, maxDepth: 3, SamplingParams.Greedy(0, 0));
        b.Expand(-1, Row(0.5, 0.32, 0.1, 0.05, 0.03));           // A = token 0 (.5), B = token 1 (.32)
        Assert.That(b.Frontier(1), Is.EqualTo(new[] { 0, 1 }));
        b.Expand(0, Row(0.05, 0.05, 0.6, 0.25, 0.05));           // A→2 (.3), A→3 (.125)
        b.Expand(1, Row(0.04, 0.02, 0.02, 0.02, 0.9));           // B→4 (.288), B→0 (.0128)
        // Within the budget: A, B, A→2, B→4, A→3; the two best of depth 2 are expanded (A→3 is not: top-k 2).
        Assert.That(b.Frontier(2), Is.EqualTo(new[] { 2, 4 }));
        b.Expand(2, Row(0.7, 0.1, 0.1, 0.05, 0.05));             // A→2→0 (.21)
        b.Expand(4, Row(0.1, 0.1, 0.1, 0.6, 0.1));               // B→4→3 (.1728), B→4→0 (.0288: lowest token of the tie)
        Assert.That(b.Frontier(3), Is.Empty, "depth 3 is the last");
        Assert.That(Enumerable.Range(0, b.Count).Where(c => b.Parent(c) == 4).Select(b.Token), Is.EqualTo(new[] { 3, 0 }));

        var tree = b.Build(out var candidates);
        // Best five paths: A .5, B .32, A→2 .3, B→4 .288, A→2→0 .21 (B→4→3 .1728 and A→3 .125 miss the budget).
        Assert.That(tree.Kind, Is.EqualTo(DraftKind.Deterministic));
        Assert.That(tree.Tokens, Is.EqualTo(new[] { 0, 1, 2, 4, 0 }));
        Assert.That(tree.Parents, Is.EqualTo(new[] { -1, -1, 0, 1, 2 }));
        Assert.That(tree.Probabilities, Is.EqualTo(new[] { 0.5f, 0.32f, 0.6f, 0.9f, 0.7f }).Within(1e-5f));
        Assert.That(candidates.Select(b.Token), Is.EqualTo(tree.Tokens));

        // Budget 3: B→4 (.288) ranks fourth, so neither it nor any descendant can make the tree; it is not expanded.
        var small = new DraftTreeBuilder(topK: 2, budget: 3, maxDepth: 3, SamplingParams.Greedy(0, 0));
        small.Expand(-1, Row(0.5, 0.32, 0.1, 0.05, 0.03));
        small.Expand(0, Row(0.05, 0.05, 0.6, 0.25, 0.05));
        small.Expand(1, Row(0.04, 0.02, 0.02, 0.02, 0.9));
        Assert.That(small.Frontier(2), Is.EqualTo(new[] { 2 }));
        Assert.That(small.Build(out _).Tokens, Is.EqualTo(new[] { 0, 1, 2 }));
    }

    [Test]
    public void TopTokensAreTheMostProbableOfTheWarpedDistribution([Values(0f, 0.7f, 1.3f)] float temperature, [Values(0, 5)] int topK, [Values(1f, 0.8f)] float topP)
    {
        var random = new Random(11 + (int)(temperature * 10) + topK * 3 + (int)(topP * 7));
        for (int trial = 0; trial < 20; trial++)
        {
            var logits = Enumerable.Range(0, 50).Select(_ => (float)(random.NextDouble() * 6 - 3)).ToArray();
            var sampling = temperature == 0 ? SamplingParams.Greedy(0, 0) : SamplingParams.Random(temperature, 1, 0, 0, topK, topP);
            // Temperature 0 ranks by the plain softmax; otherwise the verifier's warp.
            var expected = Warp.Probabilities(logits, temperature == 0 ? SamplingParams.Random(1f, 1, 0, 0) : sampling);
            var top = DraftTreeBuilder.TopTokens(logits, sampling, 4);
            var best = Enumerable.Range(0, 50).Where(t => expected[t] > 0).OrderByDescending(t => expected[t]).Take(4).ToArray();
            Assert.That(top.Select(x => x.Token), Is.EqualTo(best));
            foreach (var (token, probability) in top) Assert.That(probability, Is.EqualTo(expected[token]).Within(1e-9));
        }
    }

    private const int Vocab = 12;
    private static readonly SyntheticModel DraftDistribution = new(Vocab, salt: 31, spread: 3f, window: 3);

    /// <summary>The <paramref name="budget"/> most probable prefixes of length ≤ <paramref name="depth"/> under the draft (best-first search).</summary>
    private static List<int[]> BestPrefixes(int[] context, SamplingParams sampling, int depth, int budget)
    {
        var ranking = sampling.IsGreedy ? SamplingParams.Random(1f, 1, 0, 0) : sampling;
        var queue = new PriorityQueue<int[], double>();
        void Push(int[] prefix, double score)
        {
            var q = Warp.Probabilities(DraftDistribution.Logits([.. context, .. prefix]), ranking);
            for (int t = 0; t < Vocab; t++)
                if (q[t] > 0) queue.Enqueue([.. prefix, t], -score * q[t]);
        }
        Push([], 1);
        var best = new List<int[]>();
        while (best.Count < budget && queue.TryDequeue(out var prefix, out double negative))
        {
            best.Add(prefix);
            if (prefix.Length < depth) Push(prefix, -negative);
        }
        return best;
    }

    private static (DraftModelProposer Proposer, SyntheticTargetModel Draft, SampleState Sample) Proposer(SamplingParams sampling)
    {
        var draft = new SyntheticTargetModel(Backends.Cpu, DraftDistribution, maxContext: 100);
        var sample = new SampleState(new GenerationRequest(7, 0, 0, [3, 1, 4, 1, 5], sampling, 20), 0);
        var proposer = new DraftModelProposer(draft);
        proposer.Admit(sample);
        return (proposer, draft, sample);
    }

    [Test]
    public void ProposedTreeIsTheBestPrefixesWhenTopKCoversTheBudget([Values(0f, 0.8f)] float temperature)
    {
        // With top-k ≥ budget no limit of the expansion binds, so the tree is exactly the most probable prefixes.
        var sampling = temperature == 0 ? SamplingParams.Greedy(0, 0) : SamplingParams.Random(temperature, 1, 7, 0, topP: 0.95f);
        var (proposer, draft, sample) = Proposer(sampling);
        using (proposer)
        {
            var tree = proposer.Propose([sample], Strategy.Parse("tree:4,8,8"), [4])[0];
            var paths = Enumerable.Range(0, tree.Count).Select(n => string.Join(",", tree.PathTo(n))).ToArray();
            var expected = BestPrefixes([.. sample.Tokens], sampling, depth: 4, budget: 8).Select(p => string.Join(",", p));
            Assert.That(paths, Is.EquivalentTo(expected));
            Assert.That(tree.MaxDepth, Is.GreaterThan(1), "the draft is peaked enough to go deep");
            Assert.That(draft.CommittedTokens(sample.SampleId), Is.EqualTo(sample.Tokens), "the catch-up is committed");
        }
    }

    [Test]
    public void OutOfDraftKvTheTreeStopsGrowingAndTheCacheStaysConsistent()
    {
        // Room for the five prompt tokens and two more: depth 1's two frontier nodes fit, the next feed (four) does not.
        var sampling = SamplingParams.Greedy(0, 0);
        var draft = new SyntheticTargetModel(Backends.Cpu, DraftDistribution, maxContext: 100, slotBudget: 7);
        var sample = new SampleState(new GenerationRequest(7, 0, 0, [3, 1, 4, 1, 5], sampling, 20), 0);
        using var proposer = new DraftModelProposer(draft);
        proposer.Admit(sample);
        var tree = proposer.Propose([sample], Strategy.Parse("tree:4,2,8"), [4])[0];
        Assert.That(tree.MaxDepth, Is.EqualTo(2), "the children of depth 1 came, no deeper ones");
        Assert.That(tree.Count, Is.EqualTo(6));
        Assert.That(draft.SlotsInUse, Is.EqualTo(5), "the failed feed left nothing tentative");
        proposer.Accepted(sample, tree, [0, tree.Parents.ToList().IndexOf(0)]);
        Assert.That(draft.CommittedTokens(sample.SampleId), Is.EqualTo(sample.Tokens), "nothing of the tree was still fed, so nothing is kept");
    }

    [Test]
    public void DraftForwardsAreMeasuredIntoTheCostModel()
    {
        var cost = new CostModel("test");
        var draft = new SyntheticTargetModel(Backends.Cpu, DraftDistribution, maxContext: 100);
        var sample = new SampleState(new GenerationRequest(7, 0, 0, [3, 1, 4, 1, 5], SamplingParams.Greedy(0, 0), 20), 0);
        using var proposer = new DraftModelProposer(draft, cost);
        Assert.That(cost.Draft.IsMeasured, Is.False);
        proposer.Propose([sample], Strategy.Parse("tree:3,2,6"), [3]);
        Assert.That(cost.Draft.IsMeasured, "the catch-up and each depth's forward were timed");
        Assert.That(draft.Forwards, Is.EqualTo(3), "one forward for the catch-up (root children), one per further depth");
    }

    [Test]
    public void ProposedTreeRespectsItsShapeAndTheDraftCacheKeepsTheFedAcceptedPath([Values("tree:3,2,6", "tree:5,3,10", "tree:2,1,2")] string strategyText)
    {
        var strategy = Strategy.Parse(strategyText);
        var (proposer, draft, sample) = Proposer(SamplingParams.Random(1f, 3, 7, 0));
        using (proposer)
        {
            for (int step = 0; step < 4; step++)
            {
                var tree = proposer.Propose([sample], strategy, [strategy.Depth])[0];
                Assert.That(tree.Kind, Is.EqualTo(DraftKind.Deterministic));
                Assert.That(tree.Count, Is.InRange(1, strategy.Budget));
                Assert.That(tree.MaxDepth, Is.LessThanOrEqualTo(strategy.Depth));
                for (int n = 0; n < tree.Count; n++)
                {
                    Assert.That(tree.Parents[n], Is.LessThan(n), "parents before children");
                    Assert.That(Enumerable.Range(0, tree.Count).Count(m => tree.Parents[m] == n), Is.LessThanOrEqualTo(strategy.TopK));
                }
                var siblings = Enumerable.Range(0, tree.Count).Select(n => (tree.Parents[n], tree.Tokens[n])).ToArray();
                Assert.That(siblings, Is.Unique, "no duplicate siblings");

                // Accept the deepest path; the draft cache keeps what of it was fed: every inner node (it was expanded),
                // and the leaf too if it was expanded although none of its children made the budget.
                int leaf = Enumerable.Range(0, tree.Count).MaxBy(n => tree.Depths[n]);
                var path = new List<int>();
                for (int v = leaf; v >= 0; v = tree.Parents[v]) path.Insert(0, v);
                int committedBefore = draft.CommittedLength(sample.SampleId);
                proposer.Accepted(sample, tree, path.ToArray());
                var kept = draft.CommittedTokens(sample.SampleId).Skip(committedBefore).ToArray();
                Assert.That(kept.Length, Is.InRange(path.Count - 1, path.Count));
                Assert.That(kept, Is.EqualTo(tree.PathTo(leaf).Take(kept.Length)), "the fed part of the accepted path stays");
                sample.Tokens.AddRange(tree.PathTo(leaf));
                sample.Tokens.Add(1);
            }
            proposer.Release(sample);
            Assert.That(draft.Samples, Is.EqualTo(0));
        }
    }
}
