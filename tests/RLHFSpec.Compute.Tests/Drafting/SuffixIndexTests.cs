using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Tests.Drafting;

public class SuffixIndexTests
{
    /// <summary>Occurrences of every substring up to maxDepth tokens, counted naively.</summary>
    private static Dictionary<string, int> BruteForce(IEnumerable<int[]> sequences, int maxDepth)
    {
        var counts = new Dictionary<string, int>();
        foreach (var s in sequences)
            for (int i = 0; i < s.Length; i++)
                for (int len = 1; len <= maxDepth && i + len <= s.Length; len++)
                {
                    var key = string.Join(",", s[i..(i + len)]);
                    counts[key] = counts.GetValueOrDefault(key) + 1;
                }
        return counts;
    }

    private static int Walk(SuffixIndex index, int[] path)
    {
        int node = 0;
        foreach (int t in path) { node = index.Child(node, t); if (node < 0) return -1; }
        return node;
    }

    [Test]
    public void CountsEqualSubstringOccurrencesWhileSequencesGrowInterleaved([Values(1, 2, 3)] int seed, [Values(3, 8)] int maxDepth)
    {
        var random = new Random(seed);
        var index = new SuffixIndex(maxDepth);
        var sequences = Enumerable.Range(0, 5).Select(_ => new List<int>()).ToArray();
        var handles = sequences.Select(_ => index.BeginSequence()).ToArray();
        for (int step = 0; step < 400; step++)
        {
            int s = random.Next(sequences.Length), token = random.Next(4);
            sequences[s].Add(token);
            index.Append(handles[s], token);
        }
        var expected = BruteForce(sequences.Select(s => s.ToArray()), maxDepth);
        Assert.That(index.NodeCount - 1, Is.EqualTo(expected.Count), "one node per distinct substring");
        foreach (var (key, count) in expected)
        {
            var path = key.Split(',').Select(int.Parse).ToArray();
            int node = Walk(index, path);
            Assert.That(node, Is.GreaterThan(0), key);
            Assert.That(index.Count(node), Is.EqualTo(count), key);
            Assert.That(index.Depth(node), Is.EqualTo(path.Length), key);
        }
    }

    [Test]
    public void MatchFindsTheLongestSuffixThatHasAContinuation()
    {
        var index = new SuffixIndex(maxDepth: 6);
        index.BeginSequence([1, 2, 3, 4, 5]);
        index.BeginSequence([9, 3, 4, 7]);
        Assert.Multiple(() =>
        {
            // "2 3 4" occurs followed by 5; the longer "8 2 3 4" does not occur.
            Assert.That(index.Depth(index.Match([8, 2, 3, 4])), Is.EqualTo(3));
            Assert.That(index.Children(index.Match([8, 2, 3, 4])).Select(c => c.Token), Is.EqualTo(new[] { 5 }));
            // "3 4" is followed by 5 and 7.
            Assert.That(index.Children(index.Match([6, 3, 4])).Select(c => c.Token).Order(), Is.EqualTo(new[] { 5, 7 }));
            // "5" ends a sequence: no continuation, so the match falls back to nothing.
            Assert.That(index.Depth(index.Match([5])), Is.EqualTo(0));
        });
    }

    [Test]
    public void ChainProposesTheMostFrequentContinuation()
    {
        var index = new SuffixIndex();
        index.BeginSequence([5, 1, 2, 3, 4]);
        index.BeginSequence([6, 1, 2, 3, 9]);
        index.BeginSequence([7, 1, 2, 3, 4, 8]);
        var chain = SuffixDrafts.Chain(index, [0, 1, 2], maxTokens: 5);
        Assert.That(chain.Kind, Is.EqualTo(DraftKind.Deterministic));
        Assert.That(chain.Tokens, Is.EqualTo(new[] { 3, 4, 8 }));
        Assert.That(chain.Parents, Is.EqualTo(new[] { -1, 0, 1 }));
        Assert.That(chain.Probabilities[0], Is.EqualTo(1f));
        Assert.That(chain.Probabilities[1], Is.EqualTo(2f / 3).Within(1e-6));
    }

    [Test]
    public void ChainsContinuePastTheIndexDepthByMatchingAgain()
    {
        var index = new SuffixIndex(maxDepth: 4);
        int[] period = [10, 11, 12, 13, 14, 15];
        index.BeginSequence(Enumerable.Range(0, 5).SelectMany(_ => period).ToArray());
        var chain = SuffixDrafts.Chain(index, [13, 14], maxTokens: 12);
        Assert.That(chain.Tokens, Is.EqualTo(new[] { 15, 10, 11, 12, 13, 14, 15, 10, 11, 12, 13, 14 }));
    }

    [Test]
    public void SiblingResponsesOfTheSamePromptAreProposedToANewSample()
    {
        var index = new SuffixIndex();
        int[] prompt = [40, 41, 42, 43];
        int first = index.BeginSequence(prompt);
        index.Append(first, [1, 2, 3, 99]);
        int second = index.BeginSequence(prompt);
        var draft = SuffixDrafts.Chain(index, prompt, maxTokens: 4);
        Assert.That(draft.Tokens, Is.EqualTo(new[] { 1, 2, 3, 99 }));
        index.Append(second, [1, 2, 5]);
        var tree = SuffixDrafts.Tree(index, [.. prompt, 1, 2], maxDepth: 2, topK: 2, budget: 8);
        Assert.That(tree.Tokens.Take(2).Order(), Is.EqualTo(new[] { 3, 5 }));
    }

    [Test]
    public void TreesRespectBudgetDepthAndTopKAndExpandBestFirst([Values(1, 2, 3, 4)] int seed)
    {
        var random = new Random(seed);
        var index = new SuffixIndex(maxDepth: 8);
        for (int s = 0; s < 20; s++)
            index.BeginSequence(Enumerable.Range(0, 60).Select(_ => random.Next(5)).ToArray());
        int[] context = Enumerable.Range(0, 2).Select(_ => random.Next(5)).ToArray(); // a short match: many continuations
        var tree = SuffixDrafts.Tree(index, context, maxDepth: 5, topK: 3, budget: 25);
        Assert.That(tree.Count, Is.EqualTo(25));
        Assert.That(tree.MaxDepth, Is.LessThanOrEqualTo(5));
        var cumulative = new float[tree.Count];
        for (int i = 0; i < tree.Count; i++)
        {
            Assert.That(tree.Parents[i], Is.LessThan(i));
            Assert.That(Enumerable.Range(0, tree.Count).Count(j => tree.Parents[j] == tree.Parents[i]), Is.LessThanOrEqualTo(3));
            Assert.That(Enumerable.Range(0, tree.Count).Count(j => tree.Parents[j] == tree.Parents[i] && tree.Tokens[j] == tree.Tokens[i]), Is.EqualTo(1), "siblings are distinct");
            cumulative[i] = tree.Probabilities[i] * (tree.Parents[i] < 0 ? 1 : cumulative[tree.Parents[i]]);
            if (i > 0) Assert.That(cumulative[i], Is.LessThanOrEqualTo(cumulative[i - 1] + 1e-6f), "best-first order");
        }
        // Children of one parent: empirical probabilities of distinct continuations sum to at most 1.
        foreach (var group in Enumerable.Range(0, tree.Count).GroupBy(i => tree.Parents[i]))
            Assert.That(group.Sum(i => tree.Probabilities[i]), Is.LessThanOrEqualTo(1f + 1e-5f));
        Assert.That(SuffixDrafts.Tree(index, context, maxDepth: 5, topK: 3, budget: 25).Tokens, Is.EqualTo(tree.Tokens), "deterministic");
    }

    [Test]
    public void NothingToProposeGivesAnEmptyDraft()
    {
        var index = new SuffixIndex();
        index.BeginSequence([1, 2, 3]);
        Assert.That(SuffixDrafts.Chain(index, [7, 8], 4).Count, Is.EqualTo(0));
        Assert.That(SuffixDrafts.Chain(index, [], 4).Count, Is.EqualTo(0));
    }

    [Test]
    public void BadArgumentsNameTheArgument()
    {
        var index = new SuffixIndex();
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => index.Append(3, 1))!.ParamName, Is.EqualTo("sequence"));
        int s = index.BeginSequence();
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => index.Append(s, -1))!.ParamName, Is.EqualTo("token"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => SuffixDrafts.Tree(index, [1], 2, 0, 3))!.ParamName, Is.EqualTo("topK"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new SuffixIndex(1))!.ParamName, Is.EqualTo("maxDepth"));
    }
}
