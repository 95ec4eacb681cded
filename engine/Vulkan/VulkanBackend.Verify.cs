using System.Buffers;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec VerifyShader = new("verify", Bindings: 6, PushConstantBytes: 48);

    /// <summary>Added by verify.comp to a row status when the bad row is the draft's.</summary>
    private const uint DraftRowStatus = 16;

    [StructLayout(LayoutKind.Sequential)]
    private struct VerifyPush
    {
        public uint Vocab, SampleBase, RowBase, TargetShift, DraftShift, WorkShift;
        public uint TokensAt, ParentsAt, KindsAt, NodesAt, LogProbsAt, Pad;
    }

    protected override void VerifyCore(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs)
    {
        var target = Own(targetLogits, nameof(targetLogits));
        var draft = draftLogits != null ? Own(draftLogits, nameof(draftLogits)) : null;
        int samples = batch.NumSamples, nodes = batch.TotalNodes, vocab = batch.VocabSize;

        // Metadata: NodeOffsets [S + 1], DraftTokens [N], Parents [N], Kinds [S].
        int tokensAt = samples + 1, parentsAt = tokensAt + nodes, kindsAt = parentsAt + nodes, metaLength = kindsAt + samples;
        var meta = ArrayPool<int>.Shared.Rent(metaLength);
        Binding metaBinding, paramsBinding;
        try
        {
            batch.NodeOffsets.CopyTo(meta);
            batch.DraftTokens.CopyTo(meta.AsSpan(tokensAt));
            batch.Parents.CopyTo(meta.AsSpan(parentsAt));
            for (int s = 0; s < samples; s++) meta[kindsAt + s] = (int)batch.Kinds[s];
            metaBinding = Upload<int>(meta.AsSpan(0, metaLength));
            paramsBinding = Upload(batch.Params);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(meta);
        }

        // Results: [S, 4] per sample, AcceptedNodes [N], LogProbs [N + S].
        int nodesAt = 4 * samples, logProbsAt = nodesAt + nodes, resultLength = logProbsAt + nodes + samples;
        var result = Scratch<uint>("verify-result", resultLength);
        var work = DeviceScratch<float>("verify-residual", (long)samples * vocab); // [S, V] residual p
        var dummy = Scratch<float>("verify-no-draft", 1);
        Span<int> constants = [SamplingWorkgroupSize(vocab)];

        // Dispatch groups of whole samples whose logit rows fit one binding.
        long maxRows = RowsPerBinding(vocab);
        int first = 0;
        while (first < samples)
        {
            int end = first;
            while (end < samples && end - first < Limits.MaxWorkgroupCountX &&
                   batch.RowOffset(end) + batch.NodeOffsets[end + 1] - batch.NodeOffsets[end] + 1 - batch.RowOffset(first) <= maxRows)
                end++;
            if (end == first)
                throw new ComputeException($"verify: sample {first}'s {batch.NodeOffsets[first + 1] - batch.NodeOffsets[first] + 1} logit rows of {vocab} floats exceed one binding (maxStorageBufferRange {Limits.MaxStorageBufferRange})");
            int rowBase = batch.RowOffset(first);
            long rows = (end < samples ? batch.RowOffset(end) : batch.TotalRows) - rowBase;
            uint draftShift = 0;
            Span<Binding> bindings =
            [
                target.Bind((long)rowBase * vocab, rows * vocab, BindingAccess.Read, out uint targetShift),
                draft != null ? draft.Bind((long)rowBase * vocab, rows * vocab, BindingAccess.Read, out draftShift) : Binding.Read(dummy.Raw),
                paramsBinding,
                metaBinding,
                work.Bind((long)first * vocab, (long)(end - first) * vocab, BindingAccess.ReadWrite, out uint workShift),
                Binding.ReadWrite(result.Raw),
            ];
            var push = new VerifyPush
            {
                Vocab = (uint)vocab, SampleBase = (uint)first, RowBase = (uint)rowBase,
                TargetShift = targetShift, DraftShift = draftShift, WorkShift = workShift,
                TokensAt = (uint)tokensAt, ParentsAt = (uint)parentsAt, KindsAt = (uint)kindsAt,
                NodesAt = (uint)nodesAt, LogProbsAt = (uint)logProbsAt,
            };
            Dispatch(VerifyShader, bindings, push, (uint)(end - first), constants: constants);
            first = end;
        }

        var words = ArrayPool<uint>.Shared.Rent(resultLength);
        try
        {
            result.Read(words.AsSpan(0, resultLength)); // flushes
            for (int s = 0; s < samples; s++)
            {
                uint status = words[4 * s + 2];
                if (status == KernelValidation.RowOk) continue;
                long row = words[4 * s + 3];
                if (status >= DraftRowStatus) KernelValidation.ThrowBadRow((int)(status - DraftRowStatus), nameof(draftLogits), row);
                else KernelValidation.ThrowBadRow((int)status, nameof(targetLogits), row);
            }
            for (int s = 0; s < samples; s++)
            {
                outputs.AcceptedCount[s] = (int)words[4 * s];
                outputs.NextToken[s] = (int)words[4 * s + 1];
            }
            for (int i = 0; i < nodes; i++) outputs.AcceptedNodes[i] = (int)words[nodesAt + i];
            for (int i = 0; i < nodes + samples; i++) outputs.LogProbs[i] = BitConverter.UInt32BitsToSingle(words[logProbsAt + i]);
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(words);
        }
    }

    /// <summary>Like <see cref="Scratch{T}"/>, but device-local where the device has such memory: for work buffers
    /// only shaders touch.</summary>
    private VulkanBuffer<T> DeviceScratch<T>(string key, long length) where T : unmanaged
    {
        if (_scratch.TryGetValue(key, out var existing))
        {
            if (existing is VulkanBuffer<T> typed && typed.Length >= length) return typed;
            existing.Dispose();
        }
        var created = new VulkanBuffer<T>(this, Math.Max(length, 1), "scratch:" + key, preferHostVisible: false);
        _scratch[key] = created;
        return created;
    }
}
