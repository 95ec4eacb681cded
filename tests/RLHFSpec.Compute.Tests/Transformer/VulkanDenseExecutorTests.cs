using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Model.Transformer;
using RLHFSpec.Compute.Model.Transformer.Dense;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// The Vulkan dense executor (<c>--dense vulkan</c>) on lavapipe: its forward equals the ONNX Runtime and managed
/// CPU forwards on random Llama and Qwen2 checkpoints (prefill, decode, a draft tree; relative error ≤ 1e-4 as the
/// runtime's other tests allow fp32), stays close with fp16 weights (≤ 2e-2), runs a forward as one submit, sees
/// weights only after <see cref="TransformerModel.RefreshWeights"/>, and its host contract equals the managed
/// executor's. <see cref="TransformerModelTests"/> runs the "vkdense" setup against the double-precision reference.
/// </summary>
[TestFixture]
public sealed class VulkanDenseExecutorTests
{
    private const double Tol = 1e-4;

    /// <summary>Prefill of a prompt, three decode steps and a draft tree of 5 nodes, all logits, on one model.</summary>
    private static List<float[]> Script(TransformerModel model, int seed)
    {
        var random = new Random(seed);
        var rows = new List<float[]>();
        rows.AddRange(Prefill(model, 1, RandomTokens(random, 13, model.VocabSize)));
        for (int step = 0; step < 3; step++)
        {
            rows.AddRange(Forward(model, [1], [[random.Next(model.VocabSize)]], [[-1]]));
            model.Commit(1, [0]);
        }
        rows.AddRange(Forward(model, [1], [RandomTokens(random, 5, model.VocabSize)], [[-1, 0, 0, 1, -1]]));
        return rows;
    }

    [TestCase("llama", 1)]
    [TestCase("qwen2", 2)]
    public void The_vulkan_forward_equals_the_onnx_and_managed_cpu_forwards(string type, int seed)
    {
        using var weights = Weights(Config(type, layers: 3), seed);
        using var onnx = NewModel(weights, "cpu");
        using var managed = NewModel(weights, "managed");
        using var vulkan = NewModel(weights, "vkdense");
        Assert.That(vulkan.DenseExecutor, Is.EqualTo("vulkan"));
        var expected = Script(onnx, seed);
        var fromManaged = Script(managed, seed);
        var got = Script(vulkan, seed);
        Assert.That(got, Has.Count.EqualTo(expected.Count));
        for (int r = 0; r < expected.Count; r++)
        {
            AssertClose(got[r], expected[r], Tol, $"row {r} against ONNX Runtime");
            AssertClose(got[r], fromManaged[r], Tol, $"row {r} against the managed executor");
        }
    }

    [Test]
    public void Fp16_weights_stay_close_to_the_fp32_forward()
    {
        using var weights = Weights(Config("qwen2"), 3);
        using var fp32 = NewModel(weights, "cpu");
        using var fp16 = NewModel(weights, Backends.Vulkan, dense: DenseExecutorKind.Vulkan, halfWeights: true);
        Assert.That(fp16.DenseExecutor, Is.EqualTo("vulkan-f16"));
        var expected = Script(fp32, 3);
        var got = Script(fp16, 3);
        double worst = 0;
        for (int r = 0; r < expected.Count; r++)
        {
            AssertClose(got[r], expected[r], 2e-2, $"row {r}");
            worst = Math.Max(worst, Error(got[r], expected[r].Select(v => (double)v).ToArray()));
        }
        Assert.That(worst, Is.GreaterThan(0), "fp16 rounding shows: the weights really are fp16");
    }

    [Test]
    public void A_decode_forward_is_one_submit()
    {
        using var backend = Backends.OpenOwnVulkan();
        using var weights = Weights(Config("llama", layers: 4), 4);
        using var model = NewModel(weights, backend, dense: DenseExecutorKind.Vulkan);
        var random = new Random(4);
        Prefill(model, 1, RandomTokens(random, 6, model.VocabSize));
        Assert.That(model.TryReserve(1, 1), Is.True);
        using var logits = backend.Allocate<float>(model.VocabSize, "logits");
        backend.Flush();
        long before = backend.Submits, dispatches = backend.Dispatches;
        model.Forward(new Compute.Model.ForwardBatch { SampleIds = [1], TokenOffsets = [0, 1], Tokens = [3], Parents = [-1], LogitRows = [0] }, logits);
        Assert.That(backend.Submits, Is.EqualTo(before), "nothing waited while the forward was recorded");
        logits.ToArray();
        Assert.That(backend.Submits, Is.EqualTo(before + 1), "the logits read submits the whole forward at once");
        Assert.That(backend.Dispatches - dispatches, Is.GreaterThan(4 * (8 + 2)), "every layer's dense ops, KV appends and attention ran as shaders");
    }

    /// <summary>
    /// q/k/v and gate/up are one projection each over concatenated matrices: before attention RMSNorm, the q/k/v
    /// projection and the rotate-and-split (3 dispatches, were 6), after it the output projection, RMSNorm, the gate/up
    /// projection, SwiGLU and the down projection (5, were 6).
    /// </summary>
    [TestCase("llama", 3)]
    [TestCase("qwen2", 40)]   // past MatVecMaxTokens: the tiled path
    public void A_layer_is_eight_dense_dispatches(string type, int tokens)
    {
        using var backend = Backends.OpenOwnVulkan();
        using var weights = Weights(Config(type, layers: 2), 13);
        using var vulkan = new VulkanDenseExecutor(weights, backend, maxContext: 256);
        var a = Activations(weights.Spec, new Random(13), tokens, rows: 1);
        long before = backend.Dispatches;
        vulkan.First(a);
        Assert.That(backend.Dispatches - before, Is.EqualTo(3), "layer 0 before attention");
        before = backend.Dispatches;
        vulkan.Next(0, a);
        Assert.That(backend.Dispatches - before, Is.EqualTo(5 + 3), "layer 0 after attention and layer 1 before it");
        before = backend.Dispatches;
        vulkan.Next(1, a);
        Assert.That(backend.Dispatches - before, Is.EqualTo(5), "the last layer after attention");
    }

    [Test]
    public void The_device_copy_changes_only_when_refreshed()
    {
        using var weights = Weights(Config("qwen2"), 71);
        using var model = NewModel(weights, "vkdense");
        var tokens = RandomTokens(new Random(71), 8, model.VocabSize);
        var before = Prefill(model, 1, tokens);
        var q = weights.Arena.Span("model.layers.1.self_attn.q_proj.weight");
        for (int i = 0; i < q.Length; i++) q[i] *= 1.5f;   // what an optimizer step does: write the shared arena
        weights.Arena.Span("lm_head.weight")[0] += 1f;
        var stale = Prefill(model, 2, tokens);
        for (int t = 0; t < tokens.Length; t++) Assert.That(stale[t], Is.EqualTo(before[t]), $"position {t}: not refreshed, the old weights");
        Assert.That(model.RefreshWeights(), Is.GreaterThan(0));
        var after = Prefill(model, 3, tokens);
        var expected = ReferenceOf(weights).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++) AssertClose(after[t], expected[t], Tol, $"position {t} after the refresh");
        Assert.That(Error(before[^1], expected[^1].ToArray()), Is.GreaterThan(1e-3), "the update changed the logits");
    }

    [Test]
    public void The_host_contract_equals_the_managed_executor()
    {
        using var weights = Weights(Config("qwen2", layers: 2), 12);
        var spec = weights.Spec;
        using var vulkan = new VulkanDenseExecutor(weights, Backends.Vulkan, maxContext: 256);
        using var managed = new ManagedDenseExecutor(weights, 256, null, threads: 1);
        var random = new Random(12);
        var a = Activations(spec, random, tokens: 5, rows: 2);
        var b = Activations(spec, random, tokens: 5, rows: 2);
        Copy(a, b);
        vulkan.First(a);
        managed.First(b);
        AssertSame(a.Q, b.Q, "layer 0 q");
        AssertSame(a.K, b.K, "layer 0 k");
        AssertSame(a.V, b.V, "layer 0 v");
        for (int l = 0; l < spec.NumLayers; l++)
        {
            var attended = Enumerable.Range(0, a.Attended.Length).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
            attended.CopyTo(a.Attended, 0);
            attended.CopyTo(b.Attended, 0);
            vulkan.Next(l, a);
            managed.Next(l, b);
            if (l + 1 < spec.NumLayers) AssertSame(a.Q, b.Q, $"layer {l + 1} q");
        }
        AssertSame(a.X.AsSpan(0, 5 * spec.HiddenSize).ToArray(), b.X.AsSpan(0, 5 * spec.HiddenSize).ToArray(), "the residual stream");
        a.X.AsSpan(0, 2 * spec.HiddenSize).CopyTo(a.HeadRows);
        b.X.AsSpan(0, 2 * spec.HiddenSize).CopyTo(b.HeadRows);
        vulkan.Head(a);
        managed.Head(b);
        AssertSame(a.Logits.AsSpan(0, 2 * spec.VocabSize).ToArray(), b.Logits.AsSpan(0, 2 * spec.VocabSize).ToArray(), "logits");
    }

    private static DenseActivations Activations(Compute.Model.Training.DecoderGraphSpec spec, Random random, int tokens, int rows)
    {
        var a = new DenseActivations(spec);
        a.Prepare(tokens, rows);
        for (int i = 0; i < tokens * spec.HiddenSize; i++) a.X[i] = (float)(random.NextDouble() * 2 - 1);
        for (int t = 0; t < tokens; t++) a.SetPosition(t, random.Next(200));
        return a;
    }

    private static void Copy(DenseActivations from, DenseActivations to)
    {
        from.X.CopyTo(to.X, 0);
        for (int t = 0; t < from.Tokens; t++) to.SetPosition(t, from.Positions32[t]);
    }

    private static void AssertSame(float[] got, float[] expected, string what) => AssertClose(got, expected, Tol, what);

    [Test]
    public void Vulkan_dense_layers_need_a_vulkan_device()
    {
        using var weights = Weights(Config("llama"), 5);
        var e = Assert.Throws<ArgumentException>(() => NewModel(weights, Backends.Cpu, dense: DenseExecutorKind.Vulkan));
        Assert.That(e!.Message, Does.Contain("--dense vulkan").And.Contain("--device vulkan"));
    }
}
