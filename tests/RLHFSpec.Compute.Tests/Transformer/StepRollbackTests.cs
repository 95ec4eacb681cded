using RLHFSpec.Compute.Drafting;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Tests.Reference;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// The step loop's explicit rollback on the real transformer runtime: a step whose every draft node is rejected
/// leaves the policy's KV cache as it was before the step, plus the one token the step decided — the same blocks in
/// place, the same free blocks, nothing pending or rejected — exactly what an <c>off</c> step leaves.
/// </summary>
[TestFixture]
public sealed class StepRollbackTests
{
    /// <summary>Drafts chains whose first token is the target's least likely one: greedy verification rejects them whole.</summary>
    private sealed class RejectedProposer(ReferenceLlama target) : IProposer
    {
        public int Proposed, Accepts;

        public ProposerKind Kind => ProposerKind.Suffix;
        public void Admit(ISampleView sample) { }
        public void Append(ISampleView sample, ReadOnlySpan<int> tokens) { }
        public void Release(ISampleView sample) { }

        public DraftTree[] Propose(IReadOnlyList<ISampleView> samples, Strategy strategy, IReadOnlyList<int> depths)
        {
            var trees = new DraftTree[samples.Count];
            for (int i = 0; i < samples.Count; i++)
            {
                trees[i] = new DraftTree(DraftKind.Deterministic);
                var row = target.Forward(samples[i].Tokens.ToArray())[^1];
                int worst = Array.IndexOf(row, row.Min());
                for (int d = 0; d < depths[i]; d++) trees[i].Add(d - 1, (worst + d) % row.Length, 1f);
                Proposed += depths[i];
            }
            return trees;
        }

        public void Accepted(ISampleView sample, DraftTree draft, ReadOnlySpan<int> acceptedNodes)
        {
            Accepts++;
            Assert.That(acceptedNodes.Length, Is.EqualTo(0), "the draft was meant to be rejected");
        }
    }

    [Test]
    public void A_fully_rejected_draft_leaves_the_cache_as_before_the_step_plus_the_decided_token([Values("cpu", "vulkan")] string backendName)
    {
        var backend = Backends.Get(backendName);
        using var weights = Weights(Config("qwen2", vocab: 29), 131);
        using var drafted = NewModel(weights, backend, blockSize: 4);
        using var plain = NewModel(weights, backend, blockSize: 4);
        var proposer = new RejectedProposer(ReferenceOf(weights));
        var options = new InstanceOptions { MaxBatch = 8, StopTokens = new HashSet<int>() };
        using var withDraft = new GenerationInstance(drafted, [proposer], options with { Planner = new FixedStrategyPlanner(Strategy.Parse("suffix:6")) });
        using var off = new GenerationInstance(plain, [], options with { Planner = new FixedStrategyPlanner(Strategy.Off) });
        var random = new Random(131);
        for (int i = 0; i < 3; i++)
        {
            var prompt = RandomTokens(random, 5 + 3 * i, 29);
            foreach (var instance in new[] { withDraft, off })
                instance.Enqueue(new GenerationRequest(i, i, 0, prompt, SamplingParams.Greedy(0, 0), MaxNewTokens: 40));
        }
        withDraft.Step(); // admission (prefill) and a first step
        off.Step();
        var cache = drafted.Cache;
        for (int step = 0; step < 5; step++)
        {
            // Cache ids follow admission order, the same in both models.
            var samples = cache.Samples.ToArray();
            var before = samples.ToDictionary(s => s, s => (Context: cache.ContextLength(s), Blocks: cache.BlockTable(s).ToArray(), Words: Words(cache, s)));
            int proposed = proposer.Proposed;
            withDraft.Step();
            off.Step();
            Assert.That(proposer.Proposed, Is.GreaterThan(proposed), "the step drafted");
            Assert.That(withDraft.Stats.DraftTokensAccepted, Is.EqualTo(0));
            foreach (int s in samples)
            {
                var (context, blocks, words) = before[s];
                Assert.That(cache.ContextLength(s), Is.EqualTo(context + 1), $"step {step}, sample {s}: only the decided token was committed");
                Assert.That(cache.PendingLength(s) + cache.RejectedLength(s), Is.EqualTo(0), "nothing pending or rejected is left");
                Assert.That(cache.BlockTable(s).Count, Is.EqualTo(plain.Cache.BlockTable(s).Count), "as many blocks as the off step holds");
                Assert.That(cache.BlockTable(s).Take(blocks.Length), Is.EqualTo(blocks), "the blocks of the context stay in place");
                var after = Words(cache, s);
                for (int p = 0; p < context; p++)
                    Assert.That(after[p], Is.EqualTo(words[p]), $"step {step}, sample {s}: position {p} is untouched");
                var offWords = Words(plain.Cache, s);
                Assert.That(after[context].Zip(offWords[context]).Max(w => Math.Abs(BitConverter.UInt32BitsToSingle(w.First) - BitConverter.UInt32BitsToSingle(w.Second))),
                    Is.LessThan(1e-4), $"step {step}, sample {s}: the decided token's K/V equal the off step's");
            }
            Assert.That(cache.FreeBlocks, Is.EqualTo(plain.Cache.FreeBlocks), "the rejected nodes' blocks are free again");
        }
        Assert.That(proposer.Accepts, Is.GreaterThan(0));
    }

    /// <summary>Per committed position of cache sample <paramref name="sample"/>: its K then V words, every layer (fp32 cache: one word per value).</summary>
    private static uint[][] Words(KvCache cache, int sample)
    {
        int rowWords = cache.Layout.RowWords, context = cache.ContextLength(sample);
        var rows = new List<uint>[context];
        for (int p = 0; p < context; p++) rows[p] = new List<uint>();
        for (int l = 0; l < cache.NumLayers; l++)
        {
            var k = cache.Keys(l).ToArray();
            var v = cache.Values(l).ToArray();
            for (int p = 0; p < context; p++)
            {
                int slot = cache.Slot(sample, p);
                rows[p].AddRange(k.AsSpan(slot * rowWords, rowWords).ToArray());
                rows[p].AddRange(v.AsSpan(slot * rowWords, rowWords).ToArray());
            }
        }
        return rows.Select(r => r.ToArray()).ToArray();
    }
}
