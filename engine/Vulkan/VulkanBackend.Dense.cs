using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// The dense ops of a Llama/Qwen2 layer as compute shaders (matvec, matmul, rms_norm, rope, swiglu, residual_add,
/// embedding). Every method records and returns: a layer's ops go into one command buffer and one submit, and only
/// a read of a result waits. Weights are [rows, inDim] fp32 or fp16 buffers bound in row ranges no larger than the
/// device's maxStorageBufferRange; activations are bound whole.
/// </summary>
public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec MatVecShader = new("matvec", Bindings: 4, PushConstantBytes: 48);
    private static readonly ShaderSpec MatMulShader = new("matmul", Bindings: 4, PushConstantBytes: 48);
    private static readonly ShaderSpec RmsNormShader = new("rms_norm", Bindings: 4, PushConstantBytes: 16);
    private static readonly ShaderSpec RopeShader = new("rope", Bindings: 7, PushConstantBytes: 32);
    private static readonly ShaderSpec SwiGluShader = new("swiglu", Bindings: 2, PushConstantBytes: 16);
    private static readonly ShaderSpec ResidualAddShader = new("residual_add", Bindings: 2, PushConstantBytes: 16);
    private static readonly ShaderSpec EmbeddingShader = new("embedding", Bindings: 3, PushConstantBytes: 32);

    /// <summary>
    /// Most tokens the matrix-vector path takes (<see cref="ChooseMatMulPath"/>): it reads each weight row once per
    /// 4 tokens, so past a few dozen tokens the tiled path's reuse through shared memory wins. Decode and the
    /// verification of small draft trees stay below it, which keeps them batch-invariant with each other.
    /// </summary>
    public const int MatVecMaxTokens = 32;

    /// <summary>Weight rows per matvec workgroup (its shared array holds at most 4).</summary>
    private const int MatVecRows = 4;

    [StructLayout(LayoutKind.Sequential)]
    private struct ProjectPush { public uint Tokens, InDim, Rows, RowBase, XStride, YStride, YCol, WShift, Flags, Pad0, Pad1, Pad2; }

    [StructLayout(LayoutKind.Sequential)]
    private struct RmsNormPush { public uint OutRows, Dim; public float Eps; public uint Flags; }

    [StructLayout(LayoutKind.Sequential)]
    private struct RopePush { public uint Tokens, HeadDim, SourceStride, QHeads, KHeads, VHeads, QStride, KvStride; }

    [StructLayout(LayoutKind.Sequential)]
    private struct SwiGluPush { public uint Count, Width, Stride, UpColumn; }

    [StructLayout(LayoutKind.Sequential)]
    private struct CountPush { public uint Count, Pad0, Pad1, Pad2; }

    [StructLayout(LayoutKind.Sequential)]
    private struct EmbeddingPush { public uint Count, Dim, Rows, RowBase, WShift, Pad0, Pad1, Pad2; }

    /// <summary>True when the device reports VK_KHR_cooperative_matrix (from its extension list, never its vendor).</summary>
    public bool HasCooperativeMatrix => Device.Info.CooperativeMatrix;

    /// <summary>
    /// The projection path for <paramref name="tokens"/> tokens: matrix-vector up to <see cref="MatVecMaxTokens"/>, else
    /// the cooperative-matrix path where the device reports the extension and a shader for it exists, else tiled.
    /// No cooperative-matrix shader exists yet, so a device with the extension also gets the tiled path.
    /// </summary>
    public MatMulPath ChooseMatMulPath(int tokens) =>
        tokens <= MatVecMaxTokens ? MatMulPath.MatVec
        : HasCooperativeMatrix && CooperativeMatrixShaderAvailable ? MatMulPath.CooperativeMatrix
        : MatMulPath.Tiled;

    /// <summary>Whether a cooperative-matrix projection shader is built in (not yet: lavapipe, where this is developed, lacks the extension).</summary>
    public const bool CooperativeMatrixShaderAvailable = false;

    /// <summary>
    /// y[t, yColumn + o] (+)= Σ_i x[t, i]·W[o, i] (+ bias[o]) for t &lt; <paramref name="tokens"/>, o &lt; <paramref name="outDim"/>;
    /// with <paramref name="accumulate"/> the product is added to y (a fused residual). fp32 weights.
    /// </summary>
    /// <param name="x">// [tokens, xStride]</param>
    /// <param name="weight">// [outDim, inDim]</param>
    /// <param name="bias">// [outDim] or null</param>
    /// <param name="y">// [tokens, yStride]</param>
    public void Project(DeviceBuffer<float> x, int tokens, int inDim, int xStride, DeviceBuffer<float> weight, int outDim,
        DeviceBuffer<float>? bias, DeviceBuffer<float> y, int yStride, int yColumn, bool accumulate, MatMulPath path = MatMulPath.Auto) =>
        ProjectCore(x, tokens, inDim, xStride, Own(weight, nameof(weight)), half: false, outDim, bias, y, yStride, yColumn, accumulate, path);

    /// <summary>As <see cref="Project(DeviceBuffer{float}, int, int, int, DeviceBuffer{float}, int, DeviceBuffer{float}?, DeviceBuffer{float}, int, int, bool, MatMulPath)"/> with fp16 weights (fp32 accumulation).</summary>
    public void Project(DeviceBuffer<float> x, int tokens, int inDim, int xStride, DeviceBuffer<Half> weight, int outDim,
        DeviceBuffer<float>? bias, DeviceBuffer<float> y, int yStride, int yColumn, bool accumulate, MatMulPath path = MatMulPath.Auto) =>
        ProjectCore(x, tokens, inDim, xStride, Own(weight, nameof(weight)), half: true, outDim, bias, y, yStride, yColumn, accumulate, path);

    private void ProjectCore<TW>(DeviceBuffer<float> x, int tokens, int inDim, int xStride, VulkanBuffer<TW> w, bool half, int outDim,
        DeviceBuffer<float>? bias, DeviceBuffer<float> y, int yStride, int yColumn, bool accumulate, MatMulPath path) where TW : unmanaged
    {
        var xb = Own(x, nameof(x));
        var yb = Own(y, nameof(y));
        var bb = bias is null ? null : Own(bias, nameof(bias));
        KernelValidation.Require(tokens >= 0 && inDim > 0 && outDim > 0, nameof(tokens), $"tokens {tokens}, inDim {inDim}, outDim {outDim}: need tokens ≥ 0 and positive sizes");
        KernelValidation.Require(xStride >= inDim, nameof(xStride), $"{xStride} < inDim {inDim}");
        KernelValidation.Require(yColumn >= 0 && yColumn + outDim <= yStride, nameof(yColumn), $"columns [{yColumn}, {yColumn + outDim}) exceed yStride {yStride}");
        if (tokens == 0) return;
        KernelValidation.RequireAtLeast(x, (long)(tokens - 1) * xStride + inDim, nameof(x));
        KernelValidation.RequireAtLeast(y, (long)(tokens - 1) * yStride + yColumn + outDim, nameof(y));
        KernelValidation.RequireAtLeast(w, (long)outDim * inDim, "weight");
        if (bb is not null) KernelValidation.RequireAtLeast(bb, outDim, nameof(bias));
        if (path == MatMulPath.Auto) path = ChooseMatMulPath(tokens);
        if (path == MatMulPath.CooperativeMatrix)
            throw new ComputeException("the cooperative-matrix projection has no shader yet; use MatMulPath.Tiled");
        var shader = path == MatMulPath.MatVec ? MatVecShader : MatMulShader;
        Span<int> constants = [path == MatMulPath.MatVec ? MatVecWorkgroupSize(inDim) : 256, half ? 1 : 0, MatVecRows];

        long elementBytes = Unsafe.SizeOf<TW>();
        long rowBytes = inDim * elementBytes;
        long perBinding = (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment - 8) / rowBytes;
        if (perBinding < 1) throw new ComputeException($"a weight row of {rowBytes} bytes exceeds the device's maxStorageBufferRange {Limits.MaxStorageBufferRange}");
        var xBinding = WholeBinding(xb, BindingAccess.Read, nameof(x));
        var yBinding = WholeBinding(yb, BindingAccess.ReadWrite, nameof(y));
        var biasBinding = bb is null ? xBinding : WholeBinding(bb, BindingAccess.Read, nameof(bias));
        for (long first = 0; first < outDim; first += perBinding)
        {
            int rows = (int)Math.Min(perBinding, outDim - first);
            var wBinding = WeightBinding(w, first * inDim, (long)rows * inDim, out uint shift);
            var push = new ProjectPush
            {
                Tokens = (uint)tokens, InDim = (uint)inDim, Rows = (uint)rows, RowBase = (uint)first,
                XStride = (uint)xStride, YStride = (uint)yStride, YCol = (uint)yColumn, WShift = shift,
                Flags = (bb is null ? 0u : 1u) | (accumulate ? 2u : 0u),
            };
            Span<Binding> bindings = [xBinding, wBinding, biasBinding, yBinding];
            if (path == MatMulPath.MatVec)
            {
                var (gx, gy) = Grid(Groups(rows, MatVecRows));
                Dispatch(shader, bindings, push, gx, gy, constants: constants);
            }
            else Dispatch(shader, bindings, push, Groups(rows, 64), Groups(tokens, 64), constants: constants);
        }
    }

    /// <summary>
    /// Threads of a matrix-vector workgroup for rows of <paramref name="inDim"/>: about 4 vec4 steps per thread, a power
    /// of two between a subgroup (at least 32) and 256, and no more subgroups than the shader's shared array holds.
    /// Depends on the row length only, so a token's result does not depend on the batch.
    /// </summary>
    private int MatVecWorkgroupSize(int inDim)
    {
        int limit = Math.Min(256, Math.Min(Limits.MaxWorkgroupInvocations, 64 * Limits.SubgroupSize));
        int size = Math.Max(32, Limits.SubgroupSize);
        while (size * 16 < inDim && size * 2 <= limit) size *= 2;
        return Math.Min(size, limit);
    }

    /// <summary>A 2-D grid of <paramref name="groups"/> workgroups (the shaders fold y into x): x up to the device's limit.</summary>
    private (uint X, uint Y) Grid(long groups)
    {
        long x = Math.Min(groups, Limits.MaxWorkgroupCountX);
        return ((uint)Math.Max(1, x), (uint)Math.Max(1, (groups + x - 1) / Math.Max(1, x)));
    }

    private Binding WholeBinding<T>(VulkanBuffer<T> buffer, BindingAccess access, string argument) where T : unmanaged
    {
        if (buffer.SizeBytes > Limits.MaxStorageBufferRange)
            throw new ArgumentException($"{argument}: buffer '{buffer.Name}' of {buffer.SizeBytes} bytes exceeds the device's maxStorageBufferRange {Limits.MaxStorageBufferRange}", argument);
        return new Binding(buffer.Raw, 0, Math.Max(4, buffer.SizeBytes), access);
    }

    /// <summary>Elements [first, first + count) of a weight buffer, the range widened to whole 8-byte words where the buffer allows (fp16 pairs).</summary>
    private Binding WeightBinding<T>(VulkanBuffer<T> w, long first, long count, out uint shift) where T : unmanaged
    {
        var b = w.Bind(first, count, BindingAccess.Read, out shift);
        long range = Math.Min((b.Range + 7) / 8 * 8, w.Raw.SizeBytes - b.Offset);
        return b with { Range = Math.Max(range, 4) };
    }

    /// <summary>
    /// RMSNorm of <paramref name="rows"/> rows: y[r] = x[src]·w / rms(x[src]), src = r or <paramref name="rowMap"/>[r] (the
    /// LM head's rows that need logits, gathered in the same pass).
    /// </summary>
    /// <param name="x">// [tokens, dim]</param>
    /// <param name="weight">// [dim]</param>
    /// <param name="y">// [rows, dim]</param>
    public void RmsNorm(DeviceBuffer<float> x, DeviceBuffer<float> weight, int rows, int dim, float eps, DeviceBuffer<float> y, ReadOnlySpan<int> rowMap = default)
    {
        var xb = Own(x, nameof(x));
        var wb = Own(weight, nameof(weight));
        var yb = Own(y, nameof(y));
        KernelValidation.Require(rows >= 0 && dim > 0, nameof(dim), $"rows {rows}, dim {dim}");
        if (rows == 0) return;
        bool mapped = !rowMap.IsEmpty;
        if (mapped)
        {
            KernelValidation.RequireLength(rowMap, rows, nameof(rowMap));
            KernelValidation.RequireRange(rowMap, 0, x.Length / dim, nameof(rowMap));
        }
        else KernelValidation.RequireAtLeast(x, (long)rows * dim, nameof(x));
        KernelValidation.RequireAtLeast(weight, dim, nameof(weight));
        KernelValidation.RequireAtLeast(y, (long)rows * dim, nameof(y));
        var xBinding = WholeBinding(xb, BindingAccess.Read, nameof(x));
        Span<Binding> bindings = [xBinding, WholeBinding(wb, BindingAccess.Read, nameof(weight)), mapped ? Upload(rowMap) : xBinding, WholeBinding(yb, BindingAccess.Write, nameof(y))];
        int local = Math.Min(256, Math.Min(Limits.MaxWorkgroupInvocations, 64 * Limits.SubgroupSize));
        int size = Math.Max(32, Limits.SubgroupSize);
        while (size * 4 < dim && size * 2 <= local) size *= 2;
        Span<int> constants = [Math.Min(size, local)];
        var (gx, gy) = Grid(rows);
        Dispatch(RmsNormShader, bindings, new RmsNormPush { OutRows = (uint)rows, Dim = (uint)dim, Eps = eps, Flags = mapped ? 1u : 0u }, gx, gy, constants: constants);
    }

    /// <summary>Rotary embedding in place on <paramref name="heads"/> heads of each token, cos/sin rows looked up by position.</summary>
    /// <param name="data">// [tokens, rowStride]; head h at column h·headDim</param>
    /// <param name="positions">// [tokens]</param>
    /// <param name="cos">// [tablePositions, headDim] (CpuDense.RopeTable)</param>
    public void Rope(DeviceBuffer<float> data, int tokens, int heads, int headDim, int rowStride, ReadOnlySpan<int> positions, DeviceBuffer<float> cos, DeviceBuffer<float> sin)
    {
        var db = Own(data, nameof(data));
        KernelValidation.Require(heads > 0 && headDim > 0 && headDim % 2 == 0 && rowStride >= heads * headDim, nameof(headDim), $"heads {heads}, headDim {headDim} (must be even), rowStride {rowStride}");
        if (tokens == 0) return;
        KernelValidation.RequireAtLeast(data, (long)(tokens - 1) * rowStride + heads * headDim, nameof(data));
        var d = WholeBinding(db, BindingAccess.ReadWrite, nameof(data));
        var push = new RopePush { Tokens = (uint)tokens, HeadDim = (uint)headDim, SourceStride = (uint)rowStride, QHeads = (uint)heads, QStride = (uint)rowStride };
        RopeCore(d, d, d, d, push, positions, cos, sin);
    }

    /// <summary>
    /// Splits a fused q/k/v projection into its three buffers, rotating q and k (one dispatch): the source row holds
    /// <paramref name="qHeads"/> q heads, then <paramref name="kvHeads"/> k heads, then as many v heads.
    /// </summary>
    /// <param name="qkv">// [tokens, (qHeads + 2·kvHeads)·headDim]</param>
    /// <param name="positions">// [tokens]</param>
    /// <param name="cos">// [tablePositions, headDim] (CpuDense.RopeTable)</param>
    /// <param name="q">// [tokens, qHeads·headDim], rotated</param>
    /// <param name="k">// [tokens, kvHeads·headDim], rotated</param>
    /// <param name="v">// [tokens, kvHeads·headDim], copied</param>
    public void RopeSplit(DeviceBuffer<float> qkv, int tokens, int qHeads, int kvHeads, int headDim, ReadOnlySpan<int> positions,
        DeviceBuffer<float> cos, DeviceBuffer<float> sin, DeviceBuffer<float> q, DeviceBuffer<float> k, DeviceBuffer<float> v)
    {
        var sb = Own(qkv, nameof(qkv));
        var (qb, kb, vb) = (Own(q, nameof(q)), Own(k, nameof(k)), Own(v, nameof(v)));
        KernelValidation.Require(qHeads > 0 && kvHeads > 0 && headDim > 0 && headDim % 2 == 0, nameof(headDim), $"qHeads {qHeads}, kvHeads {kvHeads}, headDim {headDim} (must be even)");
        if (tokens == 0) return;
        int qw = qHeads * headDim, kvw = kvHeads * headDim;
        KernelValidation.RequireAtLeast(qkv, (long)tokens * (qw + 2 * kvw), nameof(qkv));
        KernelValidation.RequireAtLeast(q, (long)tokens * qw, nameof(q));
        KernelValidation.RequireAtLeast(k, (long)tokens * kvw, nameof(k));
        KernelValidation.RequireAtLeast(v, (long)tokens * kvw, nameof(v));
        var push = new RopePush
        {
            Tokens = (uint)tokens, HeadDim = (uint)headDim, SourceStride = (uint)(qw + 2 * kvw),
            QHeads = (uint)qHeads, KHeads = (uint)kvHeads, VHeads = (uint)kvHeads, QStride = (uint)qw, KvStride = (uint)kvw,
        };
        RopeCore(WholeBinding(sb, BindingAccess.Read, nameof(qkv)), WholeBinding(qb, BindingAccess.Write, nameof(q)),
            WholeBinding(kb, BindingAccess.Write, nameof(k)), WholeBinding(vb, BindingAccess.Write, nameof(v)), push, positions, cos, sin);
    }

    private void RopeCore(Binding source, Binding q, Binding k, Binding v, in RopePush push, ReadOnlySpan<int> positions, DeviceBuffer<float> cos, DeviceBuffer<float> sin)
    {
        var cb = Own(cos, nameof(cos));
        var sb = Own(sin, nameof(sin));
        int tokens = (int)push.Tokens, headDim = (int)push.HeadDim;
        KernelValidation.RequireLength(positions, tokens, nameof(positions));
        KernelValidation.RequireRange(positions, 0, Math.Min(cos.Length, sin.Length) / headDim, nameof(positions));
        Span<Binding> bindings = [source, Upload(positions), WholeBinding(cb, BindingAccess.Read, nameof(cos)), WholeBinding(sb, BindingAccess.Read, nameof(sin)), q, k, v];
        const int local = 64;
        Span<int> constants = [local];
        long pairs = (long)tokens * (push.QHeads + push.KHeads + push.VHeads) * (headDim / 2);
        var (gx, gy) = Grid(Groups(pairs, local));
        Dispatch(RopeShader, bindings, push, gx, gy, constants: constants);
    }

    /// <summary>gate[e] = silu(gate[e])·up[e] for e &lt; <paramref name="count"/>.</summary>
    public void SwiGlu(DeviceBuffer<float> gate, DeviceBuffer<float> up, long count)
    {
        var gb = Own(gate, nameof(gate));
        var ub = Own(up, nameof(up));
        KernelValidation.Require(count >= 0 && count <= uint.MaxValue, nameof(count), $"{count} elements");
        if (count == 0) return;
        KernelValidation.RequireAtLeast(gate, count, nameof(gate));
        KernelValidation.RequireAtLeast(up, count, nameof(up));
        SwiGluCore(WholeBinding(gb, BindingAccess.ReadWrite, nameof(gate)), WholeBinding(ub, BindingAccess.Read, nameof(up)),
            new SwiGluPush { Count = (uint)count, Width = (uint)count, Stride = (uint)count, UpColumn = 0 });
    }

    /// <summary>
    /// SwiGLU on a fused gate/up projection, in place: row t's gate columns become silu(gate)·up. The down projection
    /// then reads them with row stride 2·<paramref name="width"/>.
    /// </summary>
    /// <param name="gateUp">// [tokens, 2·width]: gate columns [0, width), up columns [width, 2·width)</param>
    public void SwiGluFused(DeviceBuffer<float> gateUp, int tokens, int width)
    {
        var b = Own(gateUp, nameof(gateUp));
        long count = (long)tokens * width;
        KernelValidation.Require(tokens >= 0 && width > 0 && count <= uint.MaxValue, nameof(width), $"tokens {tokens}, width {width}");
        if (tokens == 0) return;
        KernelValidation.RequireAtLeast(gateUp, 2 * count, nameof(gateUp));
        SwiGluCore(WholeBinding(b, BindingAccess.ReadWrite, nameof(gateUp)), WholeBinding(b, BindingAccess.Read, nameof(gateUp)),
            new SwiGluPush { Count = (uint)count, Width = (uint)width, Stride = 2u * (uint)width, UpColumn = (uint)width });
    }

    private void SwiGluCore(Binding gate, Binding up, in SwiGluPush push)
    {
        const int local = 256;
        Span<int> constants = [local];
        Span<Binding> bindings = [gate, up];
        Dispatch(SwiGluShader, bindings, push, (uint)Math.Clamp(Groups(push.Count, local), 1, 4096), constants: constants);
    }

    /// <summary>y[e] += x[e] for e &lt; <paramref name="count"/>.</summary>
    public void ResidualAdd(DeviceBuffer<float> x, DeviceBuffer<float> y, long count) =>
        Elementwise(ResidualAddShader, Own(x, nameof(x)), BindingAccess.Read, Own(y, nameof(y)), BindingAccess.ReadWrite, count);

    private void Elementwise(ShaderSpec shader, VulkanBuffer<float> a, BindingAccess aAccess, VulkanBuffer<float> b, BindingAccess bAccess, long count)
    {
        KernelValidation.Require(count >= 0 && count <= uint.MaxValue, nameof(count), $"{count} elements");
        if (count == 0) return;
        KernelValidation.RequireAtLeast(a, count, a.Name);
        KernelValidation.RequireAtLeast(b, count, b.Name);
        const int local = 256;
        Span<int> constants = [local];
        Span<Binding> bindings = [WholeBinding(a, aAccess, a.Name), WholeBinding(b, bAccess, b.Name)];
        Dispatch(shader, bindings, new CountPush { Count = (uint)count }, (uint)Math.Clamp(Groups(count, local), 1, 4096), constants: constants);
    }

    /// <summary>x[t, :] = table[tokens[t], :], fp32 table // [vocab, dim].</summary>
    public void Embed(ReadOnlySpan<int> tokens, DeviceBuffer<float> table, int vocab, int dim, DeviceBuffer<float> x) =>
        EmbedCore(tokens, Own(table, nameof(table)), half: false, vocab, dim, x);

    /// <summary>x[t, :] = table[tokens[t], :], fp16 table // [vocab, dim].</summary>
    public void Embed(ReadOnlySpan<int> tokens, DeviceBuffer<Half> table, int vocab, int dim, DeviceBuffer<float> x) =>
        EmbedCore(tokens, Own(table, nameof(table)), half: true, vocab, dim, x);

    private void EmbedCore<TW>(ReadOnlySpan<int> tokens, VulkanBuffer<TW> table, bool half, int vocab, int dim, DeviceBuffer<float> x) where TW : unmanaged
    {
        var xb = Own(x, nameof(x));
        KernelValidation.Require(vocab > 0 && dim > 0, nameof(dim), $"vocab {vocab}, dim {dim}");
        if (tokens.IsEmpty) return;
        KernelValidation.RequireRange(tokens, 0, vocab, nameof(tokens));
        KernelValidation.RequireAtLeast(table, (long)vocab * dim, nameof(table));
        KernelValidation.RequireAtLeast(x, (long)tokens.Length * dim, nameof(x));
        var tokenBinding = Upload(tokens);
        var xBinding = WholeBinding(xb, BindingAccess.Write, nameof(x));
        long perBinding = (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment - 8) / (dim * (long)Unsafe.SizeOf<TW>());
        const int local = 256;
        Span<int> constants = [local, half ? 1 : 0];
        for (long first = 0; first < vocab; first += perBinding)
        {
            int rows = (int)Math.Min(perBinding, vocab - first);
            Span<Binding> bindings = [tokenBinding, WeightBinding(table, first * dim, (long)rows * dim, out uint shift), xBinding];
            var push = new EmbeddingPush { Count = (uint)tokens.Length, Dim = (uint)dim, Rows = (uint)rows, RowBase = (uint)first, WShift = shift };
            Dispatch(EmbeddingShader, bindings, push, (uint)Math.Clamp(Groups((long)tokens.Length * dim, local), 1, 4096), constants: constants);
        }
    }
}
