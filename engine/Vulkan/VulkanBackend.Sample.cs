using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec SampleShader = new("sample", Bindings: 3, PushConstantBytes: 16);

    [StructLayout(LayoutKind.Sequential)]
    private struct SamplePush { public uint Vocab, RowBase, LogitsShift, Pad; }

    /// <summary>
    /// Workgroup size of the sampling shaders for rows of <paramref name="vocab"/>: a power of two (their tree
    /// reductions need one), at most 256 (their shared arrays' size), about 8 elements per thread for small
    /// vocabularies but at least a subgroup: every pass ends in barriers, which cost more the more threads wait.
    /// </summary>
    private int SamplingWorkgroupSize(int vocab)
    {
        int limit = Math.Min(256, Limits.MaxWorkgroupInvocations);
        int wanted = Math.Max(Limits.SubgroupSize, (vocab + 7) / 8);
        int size = 1;
        while (size < wanted && size * 2 <= limit) size *= 2;
        return size;
    }

    /// <summary>How many logit rows of <paramref name="vocab"/> floats one binding may cover (≥ 1).</summary>
    private long RowsPerBinding(int vocab)
    {
        long maxElements = (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment) / sizeof(float);
        if (maxElements < vocab)
            throw new ComputeException($"a logit row of {vocab} floats exceeds the device's maxStorageBufferRange {Limits.MaxStorageBufferRange}");
        return Math.Min(maxElements / vocab, Limits.MaxWorkgroupCountX);
    }

    protected override void SampleCore(ReadOnlySpan<SamplingParams> rows, DeviceBuffer<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs)
    {
        var source = Own(logits, nameof(logits));
        int count = rows.Length;
        var paramsBinding = Upload(rows);
        var result = Scratch<uint>("sample-result", 3L * count); // [R, 3]: token, logProb bits, status
        Span<int> constants = [SamplingWorkgroupSize(vocabSize)];
        long perDispatch = RowsPerBinding(vocabSize);
        for (long first = 0; first < count; first += perDispatch)
        {
            long n = Math.Min(perDispatch, count - first);
            Span<Binding> bindings =
            [
                source.Bind(first * vocabSize, n * vocabSize, BindingAccess.Read, out uint shift),
                paramsBinding,
                Binding.Write(result.Raw),
            ];
            var push = new SamplePush { Vocab = (uint)vocabSize, RowBase = (uint)first, LogitsShift = shift };
            Dispatch(SampleShader, bindings, push, (uint)n, constants: constants);
        }

        var words = System.Buffers.ArrayPool<uint>.Shared.Rent(3 * count);
        try
        {
            result.Read(words.AsSpan(0, 3 * count)); // flushes
            for (int r = 0; r < count; r++)
                if (words[3 * r + 2] != KernelValidation.RowOk) KernelValidation.ThrowBadRow((int)words[3 * r + 2], nameof(logits), r);
            for (int r = 0; r < count; r++)
            {
                tokens[r] = (int)words[3 * r];
                logProbs[r] = BitConverter.UInt32BitsToSingle(words[3 * r + 1]);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<uint>.Shared.Return(words);
        }
    }
}
