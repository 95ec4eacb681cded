using System.Buffers;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec TopTokensShader = new("top_tokens", Bindings: 4, PushConstantBytes: 32);

    [StructLayout(LayoutKind.Sequential)]
    private struct TopTokensPush { public uint Vocab, RequestBase, LogitsShift, FirstRow, Count, Pad0, Pad1, Pad2; }

    /// <summary>
    /// Untruncated rows (the common case in drafting) run on the device, which returns count (token, logit) pairs, the
    /// denominator and a status per row: 8 + 8·count bytes instead of the row. The probabilities are finished here in
    /// double from the same float logits the reference uses, so only the denominator (summed in float) differs from it.
    /// Rows that top-k or top-p truncates, or counts above <see cref="TopTokenRows.MaxDeviceCount"/>, fall back to
    /// reading the row and ranking it with the reference on the host.
    /// </summary>
    protected override void TopTokensCore(ReadOnlySpan<SamplingParams> settings, DeviceBuffer<float> logits, ReadOnlySpan<int> rows, int vocabSize, int count, Span<int> tokens, Span<double> probabilities)
    {
        var source = Own(logits, nameof(logits));
        var onDevice = new List<int>(rows.Length);
        for (int r = 0; r < rows.Length; r++)
            if (count <= TopTokenRows.MaxDeviceCount && !TopTokenRows.Truncates(settings[r], vocabSize)) onDevice.Add(r);
        if (onDevice.Count > 0) TopTokensOnDevice(source, settings, rows, vocabSize, count, CollectionsMarshal.AsSpan(onDevice), tokens, probabilities);
        if (onDevice.Count == rows.Length) return;
        var row = ArrayPool<float>.Shared.Rent(vocabSize);
        try
        {
            for (int r = 0, d = 0; r < rows.Length; r++)
            {
                if (d < onDevice.Count && onDevice[d] == r) { d++; continue; }
                var span = row.AsSpan(0, vocabSize);
                source.Read(span, (long)rows[r] * vocabSize);
                int status = TopTokenRows.Status(span);
                if (status != KernelValidation.RowOk) KernelValidation.ThrowBadRow(status, nameof(logits), rows[r]);
                TopTokenRows.OnHost(span, settings[r], tokens.Slice(r * count, count), probabilities.Slice(r * count, count));
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(row);
        }
    }

    /// <summary>Dispatches the kernel over requests <paramref name="requests"/> and finishes their probabilities.</summary>
    private void TopTokensOnDevice(VulkanBuffer<float> source, ReadOnlySpan<SamplingParams> settings, ReadOnlySpan<int> rows, int vocabSize, int count,
        ReadOnlySpan<int> requests, Span<int> tokens, Span<double> probabilities)
    {
        int n = requests.Length, stride = 2 + 2 * count;
        var deviceRows = new uint[n];
        var deviceSettings = new SamplingParams[n];
        for (int d = 0; d < n; d++) { deviceRows[d] = (uint)rows[requests[d]]; deviceSettings[d] = settings[requests[d]]; }
        var rowsBinding = Upload<uint>(deviceRows);
        var paramsBinding = Upload<SamplingParams>(deviceSettings);
        var result = Scratch<uint>("top-tokens-result", (long)n * stride); // [D, 2 + 2 * count]
        Span<int> constants = [SamplingWorkgroupSize(vocabSize)];
        long perBinding = RowsPerBinding(vocabSize);
        for (int first = 0, end; first < n; first = end)
        {
            // Requests whose rows fit one binding share a dispatch.
            uint lo = deviceRows[first], hi = lo;
            for (end = first + 1; end < n && end - first < Limits.MaxWorkgroupCountX; end++)
            {
                uint nlo = Math.Min(lo, deviceRows[end]), nhi = Math.Max(hi, deviceRows[end]);
                if (nhi - nlo + 1 > perBinding) break;
                (lo, hi) = (nlo, nhi);
            }
            Span<Binding> bindings =
            [
                source.Bind((long)lo * vocabSize, (long)(hi - lo + 1) * vocabSize, BindingAccess.Read, out uint shift),
                rowsBinding,
                paramsBinding,
                Binding.Write(result.Raw),
            ];
            var push = new TopTokensPush { Vocab = (uint)vocabSize, RequestBase = (uint)first, LogitsShift = shift, FirstRow = lo, Count = (uint)count };
            Dispatch(TopTokensShader, bindings, push, (uint)(end - first), constants: constants);
        }
        var words = ArrayPool<uint>.Shared.Rent(n * stride);
        try
        {
            result.Read(words.AsSpan(0, n * stride)); // flushes
            for (int d = 0; d < n; d++)
            {
                int r = requests[d];
                FinishTopTokens(words.AsSpan(d * stride, stride), settings[r], rows[r], tokens.Slice(r * count, count), probabilities.Slice(r * count, count));
            }
        }
        finally
        {
            ArrayPool<uint>.Shared.Return(words);
        }
    }

    /// <summary>
    /// One row's kernel output (status, float denominator, (token, logit) pairs) as tokens and probabilities:
    /// exp((l − max)·invT) / sum in double, the max being the best token's logit.
    /// </summary>
    private static void FinishTopTokens(ReadOnlySpan<uint> words, in SamplingParams p, int row, Span<int> tokens, Span<double> probabilities)
    {
        if (words[0] != KernelValidation.RowOk) KernelValidation.ThrowBadRow((int)words[0], "logits", row);
        double sum = BitConverter.UInt32BitsToSingle(words[1]);
        double max = BitConverter.UInt32BitsToSingle(words[3]);
        double invT = p.IsGreedy ? 1 : 1.0 / p.Temperature;
        for (int j = 0; j < tokens.Length; j++)
        {
            uint token = words[2 + 2 * j];
            double probability = token == uint.MaxValue ? 0 : Math.Exp((BitConverter.UInt32BitsToSingle(words[3 + 2 * j]) - max) * invT) / sum;
            // Ranked by logit, so the tokens whose probability underflows to 0 are the last ones.
            bool listed = probability > 0;
            tokens[j] = listed ? (int)token : -1;
            probabilities[j] = listed ? probability : 0;
        }
    }
}
