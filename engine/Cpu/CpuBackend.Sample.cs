using System.Buffers;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    protected override unsafe void SampleCore(ReadOnlySpan<SamplingParams> rows, DeviceBuffer<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs)
    {
        var source = Host(logits, nameof(logits));
        int count = rows.Length;
        var status = ArrayPool<int>.Shared.Rent(count);
        try
        {
            fixed (SamplingParams* rowsFixed = rows)
            fixed (int* tokensFixed = tokens)
            fixed (float* logProbsFixed = logProbs)
            {
                // Copies of the fixed pointers, which lambdas may capture.
                SamplingParams* settings = rowsFixed;
                int* tokenOut = tokensFixed;
                float* logProbOut = logProbsFixed;
                float* data = source.Pointer;
                ForEachRow(count, vocabSize, vocabSize, (r, weights) =>
                {
                    var row = new ReadOnlySpan<float>(data + (long)r * vocabSize, vocabSize);
                    status[r] = SampleRow(row, settings[r], weights, out tokenOut[r], out logProbOut[r]);
                });
            }
            for (int r = 0; r < count; r++)
                if (status[r] != KernelValidation.RowOk) KernelValidation.ThrowBadRow(status[r], nameof(logits), r);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(status);
        }
    }

    /// <returns>The row's status (<see cref="KernelValidation.RowOk"/> or why it cannot be sampled).</returns>
    private static int SampleRow(ReadOnlySpan<float> row, in SamplingParams p, Span<float> weights, out int token, out float logProb)
    {
        token = -1;
        logProb = 0f;
        int status = CpuWarp.RowMax(row, out float max);
        if (status != KernelValidation.RowOk) return status;
        if (p.IsGreedy)
        {
            token = CpuWarp.FirstIndexOf(row, max);
            logProb = CpuWarp.LogSoftmax(row[token], max, 1f, CpuWarp.SumExpShifted(row, max));
            return status;
        }
        CpuWarp.Warp(row, max, p, weights, out float fullSum);
        token = CpuWarp.Race(weights[..row.Length], p, p.Position, p.Stream);
        logProb = CpuWarp.LogSoftmax(row[token], max, 1f / p.Temperature, fullSum);
        return status;
    }
}
