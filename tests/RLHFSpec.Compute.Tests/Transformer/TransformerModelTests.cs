using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Model;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Tests.Model;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// The generation forward (ONNX Runtime dense parts + engine attention over the paged KV cache) against the
/// independent double-precision <see cref="Reference.ReferenceLlama"/>, and against itself: incremental decode =
/// full forward, tree nodes = chain forward along their path, ragged batch = samples alone. fp32 cache: relative
/// error ≤ 1e-4 (float32 accumulation over these sizes stays near 1e-6); fp16 cache: ≤ 2e-2.
/// </summary>
[TestFixture]
public sealed class TransformerModelTests
{
    private const double Tol = 1e-4;

    [TestCase("cpu", "llama", 1)]
    [TestCase("cpu", "qwen2", 2)]
    [TestCase("managed", "llama", 5)]
    [TestCase("managed", "qwen2", 6)]
    [TestCase("vulkan", "llama", 3)]
    [TestCase("vulkan", "qwen2", 4)]
    [TestCase("vkdense", "llama", 8)]
    [TestCase("vkdense", "qwen2", 9)]
    public void Prefill_matches_the_reference_forward(string backend, string type, int seed)
    {
        using var weights = Weights(Config(type), seed);
        using var model = NewModel(weights, backend);
        var tokens = RandomTokens(new Random(seed), 21, model.VocabSize); // crosses several 4-slot blocks
        var logits = Prefill(model, 7, tokens);
        var expected = ReferenceOf(weights).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++) AssertClose(logits[t], expected[t], Tol, $"position {t}");
        Assert.That(model.CommittedLength(7), Is.EqualTo(tokens.Length));
    }

    [TestCase("cpu", "llama")]
    [TestCase("managed", "qwen2")]
    [TestCase("vulkan", "qwen2")]
    [TestCase("vkdense", "llama")]
    [TestCase("vkdense", "qwen2")]
    public void Incremental_decode_equals_the_full_forward(string backend, string type)
    {
        using var weights = Weights(Config(type), 11);
        using var model = NewModel(weights, backend);
        var tokens = RandomTokens(new Random(5), 18, model.VocabSize);
        var full = Prefill(model, 1, tokens);
        Prefill(model, 2, tokens[..6]);
        for (int t = 6; t < tokens.Length; t++)
        {
            var step = Forward(model, [2], [[tokens[t]]], [[-1]]);
            model.Commit(2, [0]);
            AssertClose(step[0], full[t], Tol, $"decode step at position {t}");
        }
        Assert.That(model.CommittedLength(2), Is.EqualTo(tokens.Length));
    }

    [TestCase("cpu", 21)]
    [TestCase("managed", 23)]
    [TestCase("vulkan", 22)]
    [TestCase("vkdense", 24)]
    public void Tree_node_logits_equal_the_chain_forward_along_their_path(string backend, int seed)
    {
        using var weights = Weights(Config("qwen2"), seed);
        using var model = NewModel(weights, backend);
        var random = new Random(seed);
        var prefix = RandomTokens(random, 9, model.VocabSize);
        Prefill(model, 3, prefix);
        int nodes = 13;
        var treeTokens = RandomTokens(random, nodes, model.VocabSize);
        var parents = Enumerable.Range(0, nodes).Select(j => j == 0 ? -1 : random.Next(-1, j)).ToArray();
        var logits = Forward(model, [3], [treeTokens], [parents]);
        var reference = ReferenceOf(weights);
        for (int j = 0; j < nodes; j++)
        {
            var path = new List<int>();
            for (int v = j; v >= 0; v = parents[v]) path.Insert(0, treeTokens[v]);
            var expected = reference.Forward([.. prefix, .. path]);
            AssertClose(logits[j], expected[^1], Tol, $"node {j} (depth {path.Count})");
        }
    }

    [TestCase("cpu")]
    [TestCase("managed")]
    [TestCase("vulkan")]
    [TestCase("vkdense")]
    public void Committing_a_tree_path_compacts_the_cache_so_decoding_continues_exactly(string backend)
    {
        using var weights = Weights(Config("llama"), 31);
        using var model = NewModel(weights, backend);
        var random = new Random(31);
        var prefix = RandomTokens(random, 7, model.VocabSize);
        Prefill(model, 4, prefix);
        // Tree: 0 ← 1, 0 ← 2 ← 4 ← 5, 2 ← 3; keep 0, 2, 4 (not a prefix in feeding order, so rows move).
        int[] parents = [-1, 0, 0, 2, 2, 4];
        var tree = RandomTokens(random, parents.Length, model.VocabSize);
        Forward(model, [4], [tree], [parents]);
        model.Commit(4, [0, 2, 4]);
        model.Rollback(4);
        var committed = prefix.Concat([tree[0], tree[2], tree[4]]).ToList();
        Assert.That(model.CommittedLength(4), Is.EqualTo(committed.Count));
        var reference = ReferenceOf(weights);
        for (int step = 0; step < 5; step++)
        {
            int token = random.Next(model.VocabSize);
            var logits = Forward(model, [4], [[token]], [[-1]]);
            model.Commit(4, [0]);
            committed.Add(token);
            AssertClose(logits[0], reference.Forward(committed)[^1], Tol, $"decode step {step} after the tree commit");
        }
    }

    [TestCase("cpu")]
    [TestCase("managed")]
    public void A_batched_commit_equals_one_commit_per_sample_and_frees_exactly_the_rejected_KV(string backend)
    {
        using var weights = Weights(Config("llama"), 51);
        using var batched = NewModel(weights, backend);
        using var single = NewModel(weights, backend);
        using var fresh = NewModel(weights, backend); // holds only what is committed: the KV a rollback must leave
        var random = new Random(51);
        long[] ids = [1, 2, 3];
        var prefixes = ids.Select(_ => RandomTokens(random, random.Next(3, 10), batched.VocabSize)).ToArray();
        // Sample 1: a tree keeping a non-prefix path; 2: a chain keeping its first two; 3: everything rejected.
        int[][] parents = [[-1, 0, 0, 2, 2, 4], [-1, 0, 1, 2], [-1, 0, 1]];
        int[][] keeps = [[0, 2, 4], [0, 1], [0]];
        var trees = parents.Select(p => RandomTokens(random, p.Length, batched.VocabSize)).ToArray();
        foreach (var model in new[] { batched, single })
        {
            for (int b = 0; b < ids.Length; b++) Prefill(model, ids[b], prefixes[b]);
            Forward(model, ids, trees, parents);
        }
        Assert.That(batched.Cache.FreeBlocks, Is.EqualTo(single.Cache.FreeBlocks));
        var offsets = new int[ids.Length + 1];
        for (int b = 0; b < ids.Length; b++) offsets[b + 1] = offsets[b] + keeps[b].Length;
        int reserved = batched.Cache.FreeBlocks;
        batched.Commit(ids, offsets, keeps.SelectMany(k => k).ToArray());
        for (int b = 0; b < ids.Length; b++) single.Commit(ids[b], keeps[b]);
        Assert.That(batched.Cache.FreeBlocks, Is.EqualTo(reserved), "commit only keeps: the rejected nodes hold their blocks");
        Assert.Throws<InvalidOperationException>(() => batched.TryReserve(ids[2], 1), "nothing reserved before the rollback");
        batched.Rollback(ids);
        for (int b = 0; b < ids.Length; b++) single.Rollback(ids[b]);
        var committed = ids.Select((_, b) => prefixes[b].Concat(keeps[b].Select(j => trees[b][j])).ToArray()).ToArray();
        for (int b = 0; b < ids.Length; b++) Prefill(fresh, ids[b], committed[b]);
        Assert.That(batched.Cache.FreeBlocks, Is.EqualTo(fresh.Cache.FreeBlocks), "the rejected nodes' blocks are free again");
        Assert.That(single.Cache.FreeBlocks, Is.EqualTo(fresh.Cache.FreeBlocks));
        var next = ids.Select(_ => new[] { random.Next(batched.VocabSize) }).ToArray();
        int[][] one = [[-1], [-1], [-1]];
        var a = Forward(batched, ids, next, one);
        var c = Forward(single, ids, next, one);
        var r = Forward(fresh, ids, next, one);
        for (int b = 0; b < ids.Length; b++)
        {
            Assert.That(batched.CommittedLength(ids[b]), Is.EqualTo(committed[b].Length));
            Assert.That(a[b], Is.EqualTo(c[b]), $"sample {ids[b]}: batched and per-sample commits decode alike");
            AssertClose(a[b], r[b], Tol, $"sample {ids[b]}: as if only the kept tokens had been fed");
        }
        Assert.Throws<ArgumentException>(() => batched.Commit(ids, [0, 1], [0]));
    }

    [TestCase("cpu")]
    [TestCase("managed")]
    [TestCase("vulkan")]
    [TestCase("vkdense")]
    public void A_ragged_batch_equals_each_sample_alone(string backend)
    {
        using var weights = Weights(Config("qwen2"), 41);
        using var model = NewModel(weights, backend);
        var random = new Random(41);
        var reference = ReferenceOf(weights);
        // Sample 10: fresh prefill; 11: decode after a prefix; 12: tree after a prefix; 13: empty feed.
        var prefix11 = RandomTokens(random, 5, model.VocabSize);
        var prefix12 = RandomTokens(random, 11, model.VocabSize);
        Prefill(model, 11, prefix11);
        Prefill(model, 12, prefix12);
        var p10 = RandomTokens(random, 6, model.VocabSize);
        var t11 = RandomTokens(random, 1, model.VocabSize);
        var t12 = RandomTokens(random, 4, model.VocabSize);
        int[] tree12 = [-1, 0, -1, 2];
        var logits = Forward(model, [10, 11, 12, 13], [p10, t11, t12, []], [Chain(6), [-1], tree12, []]);
        var e10 = reference.Forward(p10);
        for (int t = 0; t < 6; t++) AssertClose(logits[t], e10[t], Tol, $"sample 10 token {t}");
        AssertClose(logits[6], reference.Forward([.. prefix11, .. t11])[^1], Tol, "sample 11 decode");
        AssertClose(logits[7], reference.Forward([.. prefix12, t12[0]])[^1], Tol, "sample 12 node 0");
        AssertClose(logits[8], reference.Forward([.. prefix12, t12[0], t12[1]])[^1], Tol, "sample 12 node 1");
        AssertClose(logits[9], reference.Forward([.. prefix12, t12[2]])[^1], Tol, "sample 12 node 2");
        AssertClose(logits[10], reference.Forward([.. prefix12, t12[2], t12[3]])[^1], Tol, "sample 12 node 3");
    }

    [Test]
    public void A_chain_fed_over_several_forwards_equals_one_forward_and_a_broken_chain_is_rejected()
    {
        using var weights = Weights(Config("llama"), 51);
        using var model = NewModel(weights, Backends.Cpu);
        var random = new Random(51);
        var prefix = RandomTokens(random, 6, model.VocabSize);
        var chain = RandomTokens(random, 4, model.VocabSize);
        Prefill(model, 1, prefix);
        Assert.That(model.TryReserve(1, 1), Is.True);
        var reference = ReferenceOf(weights);
        for (int j = 0; j < chain.Length; j++)
        {
            var logits = Forward(model, [1], [[chain[j]]], [[j - 1]]); // reserves one more each time
            AssertClose(logits[0], reference.Forward([.. prefix, .. chain[..(j + 1)]])[^1], Tol, $"drafted token {j}");
        }
        model.Commit(1, [0, 1]);
        model.Rollback(1);
        Assert.That(model.CommittedLength(1), Is.EqualTo(prefix.Length + 2));

        // Two siblings fed by separate forwards: the second cannot see the first, so it is rejected, not mis-masked.
        Forward(model, [1], [[3]], [[-1]]);
        Assert.That(model.TryReserve(1, 1), Is.True);
        Assert.Throws<NotSupportedException>(() => Forward(model, [1], [[4]], [[-1]]));
    }

    [Test]
    public void Out_of_blocks_is_a_clean_refusal_and_release_returns_the_blocks()
    {
        using var weights = Weights(Config("llama", layers: 1), 61);
        // 1 layer × K and V × 4 slots × 2 heads × 8 dims × 4 bytes = 512 bytes per block: 4 blocks.
        using var model = NewModel(weights, Backends.Cpu, blockSize: 4, budget: 2048);
        Assert.That(model.Cache.NumBlocks, Is.EqualTo(4));
        Assert.That(model.TryReserve(1, 12), Is.True);
        Assert.That(model.TryReserve(2, 8), Is.False, "only one block is left");
        Assert.That(model.Cache.FreeBlocks, Is.EqualTo(1), "a refused reservation takes nothing");
        Assert.That(model.TryReserve(2, 4), Is.True);
        model.Release(1);
        Assert.That(model.Cache.FreeBlocks, Is.EqualTo(3));
        Assert.That(model.TryReserve(3, 12), Is.True);
    }

    [TestCase("cpu")]
    [TestCase("managed")]
    [TestCase("vkdense")]
    public void Forward_timings_count_every_part_and_reset(string setup)
    {
        using var weights = Weights(Config("llama"), 5);
        using var model = NewModel(weights, setup);
        var tokens = RandomTokens(new Random(5), 12, model.VocabSize);
        Prefill(model, 1, tokens);
        var t = model.Timings;
        Assert.That((t.Forwards, t.Tokens), Is.EqualTo((1L, 12L)));
        Assert.That(new[] { t.PlanSeconds, t.DensePreSeconds, t.KvWriteSeconds, t.AttentionSeconds, t.DensePostSeconds, t.HeadSeconds }, Is.All.GreaterThan(0));
        Assert.That(t.TotalSeconds, Is.EqualTo(t.PlanSeconds + t.DensePreSeconds + t.KvWriteSeconds + t.AttentionSeconds + t.DensePostSeconds + t.HeadSeconds).Within(1e-12));
        Assert.That(t.ToString(), Does.Contain("kv-write"));
        t.Reset();
        Assert.That((t.Forwards, t.Tokens, t.TotalSeconds), Is.EqualTo((0L, 0L, 0.0)));
    }

    [TestCase("cpu")]
    [TestCase("managed")]
    public void Weights_updated_in_place_are_seen_by_the_next_forward(string setup)
    {
        using var weights = Weights(Config("qwen2"), 71);
        using var model = NewModel(weights, setup);
        var tokens = RandomTokens(new Random(71), 8, model.VocabSize);
        var before = Prefill(model, 1, tokens);
        var q = weights.Arena.Span("model.layers.1.self_attn.q_proj.weight");
        for (int i = 0; i < q.Length; i++) q[i] *= 1.5f;   // what an optimizer step does: write the shared arena
        weights.Arena.Span("lm_head.weight")[0] += 1f;
        var after = Prefill(model, 2, tokens);
        var expected = ReferenceOf(weights).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++) AssertClose(after[t], expected[t], Tol, $"position {t} after the update");
        Assert.That(Error(before[^1], expected[^1].ToArray()), Is.GreaterThan(1e-3), "the update changed the logits");
    }

    [Test]
    public void An_fp16_cache_stays_close_to_the_reference()
    {
        using var weights = Weights(Config("qwen2"), 81);
        using var model = NewModel(weights, Backends.Cpu, dtype: KvDType.F16);
        var tokens = RandomTokens(new Random(81), 12, model.VocabSize);
        var logits = Prefill(model, 1, tokens);
        var expected = ReferenceOf(weights).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++) AssertClose(logits[t], expected[t], 2e-2, $"position {t}");
    }

    [Test]
    public void A_saved_checkpoint_loads_into_the_same_model()
    {
        using var folder = new FormatsTestFolder();
        var config = Config("llama");
        using var weights = Weights(config, 91);
        var tokenizer = TextTokenizer.FromBpe(ByteLevelBpeTrainer.Train(TokenizerTests.ArithmeticCorpus(), 3, ["<|endoftext|>"]));
        var dir = folder.File("model");
        Checkpoint.Save(dir, config with { VocabSize = tokenizer.VocabSize }, ResizeVocab(weights, tokenizer.VocabSize), tokenizer);
        using var loaded = TransformerModel.Load(dir, Backends.Cpu, new TransformerOptions { KvMemoryBudgetBytes = 1 << 20 });
        Assert.That(loaded.VocabSize, Is.EqualTo(tokenizer.VocabSize));
        var tokens = RandomTokens(new Random(9), 10, loaded.VocabSize);
        var logits = Prefill(loaded, 1, tokens);
        var expected = ReferenceOf(loaded.Weights).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++) AssertClose(logits[t], expected[t], Tol, $"position {t}");
    }

    [Test]
    public void Bad_input_is_refused_with_a_message_naming_it()
    {
        using var weights = Weights(Config("llama", maxPositions: 8), 3);
        using var model = NewModel(weights, Backends.Cpu);
        using var logits = Backends.Cpu.Allocate<float>(16L * model.VocabSize, "logits");
        var e1 = Assert.Throws<InvalidOperationException>(() => model.Forward(Batch([5], [1], [-1]), logits))!;
        Assert.That(e1.Message, Does.Contain("without a reservation"));
        Assert.That(model.TryReserve(5, 2), Is.True);
        var e2 = Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(Batch([5], [99], [-1]), logits))!;
        Assert.That(e2.Message, Does.Contain("vocabulary"));
        var e3 = Assert.Throws<ArgumentException>(() => model.Forward(Batch([5], [1, 2], [-1, 1]), logits))!;
        Assert.That(e3.Message, Does.Contain("parent"));
        Assert.Throws<InvalidOperationException>(() => model.Forward(Batch([5], [1, 2, 3], [-1, 0, 1]), logits), "beyond the reservation");
        model.Forward(Batch([5], [1, 2], [-1, -1]), logits);
        var e4 = Assert.Throws<ArgumentException>(() => model.Commit(5, [0, 1]))!;
        Assert.That(e4.Message, Does.Contain("root-to-leaf path"));
        model.Commit(5, [1]);
        model.Rollback(5);
        Assert.That(model.TryReserve(5, 8), Is.True);
        var e5 = Assert.Throws<ArgumentException>(() => model.Forward(Batch([5], Enumerable.Repeat(1, 8).ToArray(), Chain(8)), logits))!;
        Assert.That(e5.Message, Does.Contain("context limit 8"));
    }

    private static ForwardBatch Batch(long[] ids, int[] tokens, int[] parents) => new()
    {
        SampleIds = ids,
        TokenOffsets = new[] { 0, tokens.Length },
        Tokens = tokens,
        Parents = parents,
        LogitRows = new[] { tokens.Length - 1 },
    };

    private static Dictionary<string, HostTensor> ResizeVocab(TransformerWeights weights, int vocab)
    {
        var tensors = weights.ToHostTensors();
        var embed = tensors["model.embed_tokens.weight"];
        int h = embed.Shape[1];
        var data = new float[vocab * h];
        for (int i = 0; i < data.Length; i++) data[i] = embed.Data[i % embed.Data.Length];
        tensors["model.embed_tokens.weight"] = new HostTensor([vocab, h], data);
        return tensors;
    }
}
