using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>One measured row of <see cref="ModelBenchmark"/>.</summary>
/// <param name="Case">What was timed (prefill, decode, tree-verify, dense, train).</param>
/// <param name="Batch">Samples in the step.</param>
/// <param name="TokensPerSample">New tokens per sample (prompt length, 1 for decode, nodes for trees).</param>
/// <param name="Seconds">Median seconds of one run.</param>
/// <param name="TokensPerSecond">Tokens processed per second.</param>
/// <param name="Ratio">Dense rows: dense-part time / bare-MatMul time of the same shapes (target ≤ 1.5); else NaN.</param>
/// <param name="Breakdown">Forward rows: the share of time per part (dense, attention, head, planning).</param>
/// <param name="AttentionSeconds">Step rows: the attention kernel's median-run share of one step, seconds; else NaN.</param>
/// <param name="KvBytes">Step rows: bytes of K and V the step's attention reads (every layer, every visible slot once); else 0.</param>
public sealed record ModelBenchmarkRow(string Case, int Batch, int TokensPerSample, double Seconds, double TokensPerSecond, double Ratio, string Breakdown = "",
    double AttentionSeconds = double.NaN, long KvBytes = 0)
{
    /// <summary>The attention time of the step over the time of reading its K/V once at <paramref name="copyBytesPerSecond"/>.</summary>
    public double AttentionOverKvRead(double copyBytesPerSecond) => KvBytes > 0 ? AttentionSeconds / (KvBytes / copyBytesPerSecond) : double.NaN;
}

/// <summary>
/// Times the transformer runtime on the running device and execution provider: ragged prefill, decode and tree
/// verification (forwards of <see cref="TransformerModel"/>, KV cache included), the dense parts of a layer against
/// ONNX Runtime's bare MatMul for the same shapes, and a training step (forward + autodiff backward + AdamW).
/// Every number is a median of timed runs after a warm-up; nothing is extrapolated.
/// </summary>
public sealed class ModelBenchmark(TransformerWeights weights, Engine.ComputeBackend backend, OnnxSessionOptions session)
{
    /// <summary>What runs the dense layers of the timed forwards.</summary>
    public DenseExecutorKind Executor { get; init; } = DenseExecutorKind.Auto;

    /// <summary>Element type of the timed models' KV caches.</summary>
    public Engine.Kernels.KvDType KvDType { get; init; } = Engine.Kernels.KvDType.F32;

    /// <summary>Seconds of timed runs per case (at least 3 runs).</summary>
    public double MinSeconds { get; init; } = 0.3;

    private double Median(Action run, ForwardTimings? timings = null)
    {
        // Warm-up until the JIT has tiered up the hot paths (first runs execute unoptimised code).
        var warm = Stopwatch.StartNew();
        for (int w = 0; w < 5 || warm.Elapsed.TotalSeconds < MinSeconds; w++)
        {
            run();
            if (w >= 200) break;
        }
        timings?.Reset(); // the time split covers the timed runs only
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (times.Count < 3 || total.Elapsed.TotalSeconds < MinSeconds)
        {
            var clock = Stopwatch.StartNew();
            run();
            times.Add(clock.Elapsed.TotalSeconds);
            if (times.Count >= 50) break;
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>
    /// Runs small prefill, decode and tree-verify forwards for <paramref name="seconds"/> before any case is timed.
    /// Without it the first cases measured tier-0 code: .NET's tiered JIT starts counting calls only after 100 ms
    /// without new tier-0 compilations, which a process starting up rarely has, and the first case (prefill of one
    /// 64-token prompt) measured its attention kernel at ~15 ms a layer instead of ~1–2 ms.
    /// </summary>
    public void WarmUp(double seconds = 3)
    {
        using var prefill = PrefillCase(1, 64);
        using var decode = StepCase(1, 1, 64);
        using var tree = StepCase(4, 4, 64);
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            prefill.Run();
            decode.Run();
            tree.Run();
        }
    }

    /// <summary>A model set up for one forward shape, and the action that runs that forward once.</summary>
    private sealed class ForwardCase(TransformerModel model, IDisposable logits, Action run) : IDisposable
    {
        public TransformerModel Model => model;
        public void Run() => run();

        public void Dispose()
        {
            logits.Dispose();
            model.Dispose();
        }
    }

    private TransformerModel NewModel(long budget) => new(weights, backend, new TransformerOptions { KvMemoryBudgetBytes = budget, Session = session, Dense = Executor, KvDType = KvDType });

    private static long KvBytes(TransformerWeights w, long tokens) =>
        2L * w.Spec.NumLayers * w.Spec.NumKvHeads * w.Spec.HeadDim * sizeof(float) * (tokens + 64 * 16) + (1 << 20);

    /// <summary>Prefill of <paramref name="batch"/> prompts of <paramref name="promptTokens"/> tokens in one ragged forward (logits of the last token of each).</summary>
    public ModelBenchmarkRow Prefill(int batch, int promptTokens)
    {
        using var c = PrefillCase(batch, promptTokens);
        double s = Median(c.Run, c.Model.Timings);
        return new("prefill", batch, promptTokens, s, batch * promptTokens / s, double.NaN, Shares(c.Model.Timings));
    }

    private ForwardCase PrefillCase(int batch, int promptTokens)
    {
        var model = NewModel(KvBytes(weights, (long)batch * (promptTokens + 16)));
        var logits = backend.Allocate<float>((long)batch * model.VocabSize, "bench logits");
        var ids = Enumerable.Range(0, batch).Select(i => (long)i).ToArray();
        var offsets = Enumerable.Range(0, batch + 1).Select(b => b * promptTokens).ToArray();
        var tokens = Enumerable.Range(0, batch * promptTokens).Select(t => (t * 7 + 3) % model.VocabSize).ToArray();
        var parents = Enumerable.Range(0, batch * promptTokens).Select(t => t % promptTokens - 1).ToArray();
        var rows = Enumerable.Range(1, batch).Select(b => b * promptTokens - 1).ToArray();
        return new ForwardCase(model, logits, () =>
        {
            foreach (var id in ids) model.TryReserve(id, promptTokens);
            model.Forward(new ForwardBatch { SampleIds = ids, TokenOffsets = offsets, Tokens = tokens, Parents = parents, LogitRows = rows }, logits);
            backend.Flush();   // a device-resident forward (--dense vulkan) only records: its submit is part of the step
            foreach (var id in ids) model.Rollback(id);
        });
    }

    /// <summary>
    /// One verification step of <paramref name="batch"/> samples with <paramref name="context"/> committed tokens:
    /// each feeds its pending token and <paramref name="nodes"/> − 1 draft nodes as a binary tree (nodes = 1 is plain
    /// decode), logits for every node.
    /// </summary>
    public ModelBenchmarkRow Step(int batch, int nodes, int context)
    {
        using var c = StepCase(batch, nodes, context);
        double s = Median(c.Run, c.Model.Timings);
        var t = c.Model.Timings;
        // The attention share of the median run: the timed runs' attention fraction times the median.
        double attention = t.TotalSeconds > 0 ? s * t.AttentionSeconds / t.TotalSeconds : double.NaN;
        var layout = c.Model.Cache.Layout;
        long kvBytes = 2L * weights.Spec.NumLayers * batch * (context + nodes) * layout.RowWords * sizeof(uint);
        return new(nodes == 1 ? "decode" : "tree-verify", batch, nodes, s, batch * nodes / s, double.NaN, Shares(t), attention, kvBytes);
    }

    /// <summary>
    /// Host memory copy bandwidth, bytes per second: the median of copying a <paramref name="megabytes"/> MB buffer
    /// (larger than the caches) on as many threads as the backend has, counted as bytes read.
    /// </summary>
    public static double CopyBandwidth(int threads, int megabytes = 256)
    {
        int parts = Math.Max(1, threads);
        long length = (long)megabytes << 20;
        var source = GC.AllocateUninitializedArray<byte>((int)length);
        var target = GC.AllocateUninitializedArray<byte>((int)length);
        new Random(1).NextBytes(source);
        target.AsSpan().Clear();
        var times = new List<double>();
        for (int r = 0; r < 6; r++)
        {
            var clock = Stopwatch.StartNew();
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, p =>
            {
                long from = length * p / parts, to = length * (p + 1) / parts;
                source.AsSpan((int)from, (int)(to - from)).CopyTo(target.AsSpan((int)from, (int)(to - from)));
            });
            if (r > 0) times.Add(clock.Elapsed.TotalSeconds);   // the first run faults the pages in
        }
        times.Sort();
        return length / times[times.Count / 2];
    }

    private ForwardCase StepCase(int batch, int nodes, int context)
    {
        var model = NewModel(KvBytes(weights, (long)batch * (context + nodes + 16)));
        var logits = backend.Allocate<float>((long)batch * nodes * model.VocabSize, "bench logits");
        var ids = Enumerable.Range(0, batch).Select(i => (long)i).ToArray();
        // Committed context.
        var prefillOffsets = Enumerable.Range(0, batch + 1).Select(b => b * context).ToArray();
        foreach (var id in ids) model.TryReserve(id, context);
        model.Forward(new ForwardBatch
        {
            SampleIds = ids, TokenOffsets = prefillOffsets,
            Tokens = Enumerable.Range(0, batch * context).Select(t => (t * 5 + 1) % model.VocabSize).ToArray(),
            Parents = Enumerable.Range(0, batch * context).Select(t => t % context - 1).ToArray(), LogitRows = [],
        }, logits);
        foreach (var id in ids) model.Commit(id, Enumerable.Range(0, context).ToArray());

        var offsets = Enumerable.Range(0, batch + 1).Select(b => b * nodes).ToArray();
        var tokens = Enumerable.Range(0, batch * nodes).Select(t => (t * 3 + 2) % model.VocabSize).ToArray();
        var parents = Enumerable.Range(0, batch * nodes).Select(t => t % nodes == 0 ? -1 : (t % nodes - 1) / 2).ToArray(); // binary tree
        var rows = Enumerable.Range(0, batch * nodes).ToArray();
        return new ForwardCase(model, logits, () =>
        {
            foreach (var id in ids) model.TryReserve(id, nodes);
            model.Forward(new ForwardBatch { SampleIds = ids, TokenOffsets = offsets, Tokens = tokens, Parents = parents, LogitRows = rows }, logits);
            backend.Flush();   // a device-resident forward (--dense vulkan) only records: its submit is part of the step
            foreach (var id in ids) model.Rollback(id);
        });
    }

    private static string Shares(ForwardTimings t)
    {
        double total = Math.Max(t.TotalSeconds, 1e-12);
        return $"dense {(t.DensePreSeconds + t.DensePostSeconds) / total:P0}, kv write {t.KvWriteSeconds / total:P0}, attention {t.AttentionSeconds / total:P0}, head {t.HeadSeconds / total:P0}, plan {t.PlanSeconds / total:P0}";
    }

    /// <summary>
    /// The dense part of one layer as generation runs it (one fused graph: layer l after attention + layer l + 1
    /// before it) over <paramref name="tokens"/> tokens, against a graph of only the MatMuls of the same shapes
    /// (o, gate, up, down, q, k, v) with the same weights.
    /// </summary>
    public ModelBenchmarkRow Dense(int tokens)
    {
        var spec = weights.Spec;
        using var fused = new OnnxSession(DenseGraphs.PostPre(spec, ElementType.Float), session);
        using var bare = new OnnxSession(BareMatMuls(spec), session);
        int h = spec.HiddenSize, q = spec.NumHeads * spec.HeadDim, kv = spec.NumKvHeads * spec.HeadDim, inter = spec.IntermediateSize;
        var rng = new Random(1);
        float[] Fill(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        using var x = OrtTensors.Over(Fill((long)tokens * h), tokens, h);
        using var attended = OrtTensors.Over(Fill((long)tokens * q), tokens, q);
        using var mid = OrtTensors.Over(Fill((long)tokens * inter), tokens, inter);
        using var positions = OrtTensors.Over(Enumerable.Range(0, tokens).Select(i => (long)i).ToArray(), tokens);
        string L(string n) => "model.layers.0." + n;
        var fusedIn = DenseGraphs.PreWeights(spec).ToDictionary(n => DenseGraphs.PrePrefix + n, n => weights.Arena.Value(L(n)));
        foreach (var n in DenseGraphs.PostWeights(spec)) fusedIn[DenseGraphs.PostPrefix + n] = weights.Arena.Value(L(n));
        fusedIn[DenseGraphs.X] = x;
        fusedIn[DenseGraphs.Attended] = attended;
        fusedIn[DenseGraphs.Positions] = positions;
        var bareIn = new Dictionary<string, OrtValue> { ["x"] = x, ["attended"] = attended, ["mid"] = mid };
        foreach (var n in new[] { "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight" })
            bareIn[n] = weights.Arena.Value(L(n));
        double dense = Median(() => { using var a = fused.Run(fusedIn); });
        double matmul = Median(() => { using var c = bare.Run(bareIn); });
        return new("dense-vs-matmul", 1, tokens, dense, tokens / dense, dense / matmul);
    }

    /// <summary>The seven projections of a layer as bare MatMuls (weights transposed as in the dense graphs).</summary>
    private static byte[] BareMatMuls(DecoderGraphSpec spec)
    {
        var g = new GraphBuilder("bare_matmuls");
        int h = spec.HiddenSize, q = spec.NumHeads * spec.HeadDim, kv = spec.NumKvHeads * spec.HeadDim, inter = spec.IntermediateSize;
        var x = g.Input("x", ElementType.Float, "T", h);
        var attended = g.Input("attended", ElementType.Float, "T", q);
        var mid = g.Input("mid", ElementType.Float, "T", inter);
        Value W(string name, long o, long i) => g.Input(name, ElementType.Float, o, i);
        var shapes = new (string Name, long Out, long In, Value Input)[]
        {
            ("self_attn.q_proj.weight", q, h, x), ("self_attn.k_proj.weight", kv, h, x), ("self_attn.v_proj.weight", kv, h, x),
            ("self_attn.o_proj.weight", h, q, attended), ("mlp.gate_proj.weight", inter, h, x), ("mlp.up_proj.weight", inter, h, x),
            ("mlp.down_proj.weight", h, inter, mid),
        };
        int k = 0;
        foreach (var (name, o, i, input) in shapes) g.Output(g.MatMul(input, g.Transpose(W(name, o, i), 1, 0)), $"y{k++}");
        return g.ToBytes();
    }

    /// <summary>
    /// One training step of the policy loss (forward, autodiff backward, AdamW update in place) over
    /// <paramref name="batch"/> sequences of <paramref name="length"/> tokens.
    /// </summary>
    public ModelBenchmarkRow Train(int batch, int length)
    {
        var spec = weights.Spec;
        using var graph = new OnnxSession(DecoderTrainingGraph.PolicyLossGraph(spec, ElementType.Float).ToBytes(), session);
        using var grads = new TensorArena(spec.Tensors());
        var optimizer = new AdamW(new AdamWOptions { Schedule = LearningRateSchedule.Constant(1e-6) });
        foreach (var name in weights.Arena.Names) optimizer.Add(name, weights.Arena.Memory(name), grads.Memory(name), DecoderGraphSpec.Decays(name));
        long n = (long)batch * length;
        var ids = Enumerable.Range(0, (int)n).Select(i => (long)((i * 7 + 1) % spec.VocabSize)).ToArray();
        var positions = Enumerable.Range(0, (int)n).Select(i => (long)(i % length)).ToArray();
        var ones = Enumerable.Repeat(1f, (int)n).ToArray();
        var zeros = new float[n];
        using var vIds = OrtTensors.Over(ids, batch, length);
        using var vPos = OrtTensors.Over(positions, batch, length);
        using var vMask = OrtTensors.Over(ones, batch, length);
        using var vTargets = OrtTensors.Over(ids.Reverse().ToArray(), batch, length);
        using var vOld = OrtTensors.Over(zeros, batch, length);
        using var vAdv = OrtTensors.Over(ones.ToArray(), batch, length);
        var inputs = weights.Arena.Values();
        inputs[DecoderTrainingGraph.InputIds] = vIds;
        inputs[DecoderTrainingGraph.PositionIds] = vPos;
        inputs[DecoderTrainingGraph.AttentionMask] = vMask;
        inputs[DecoderTrainingGraph.Targets] = vTargets;
        inputs[DecoderTrainingGraph.OldLogProbs] = vOld;
        inputs[DecoderTrainingGraph.Advantages] = vAdv;
        inputs[DecoderTrainingGraph.LossMask] = vMask;
        var outputs = grads.Values(DecoderTrainingGraph.GradientPrefix);
        double s = Median(() =>
        {
            graph.Run(inputs, outputs);
            optimizer.Update();
        });
        return new("train", batch, length, s, n / s, double.NaN);
    }
}
