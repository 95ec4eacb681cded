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
                ForEachItem(count, vocabSize, scratchRows: 1, (ref CpuRowTeam.Member member, int r) =>
                {
                    int code = SampleRow(ref member, data + (long)r * vocabSize, vocabSize, settings[r], out int token, out float logProb);
                    if (!member.Leads) return;
                    status[r] = code;
                    tokenOut[r] = token;
                    logProbOut[r] = logProb;
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
    private static unsafe int SampleRow(ref CpuRowTeam.Member member, float* row, int vocab, in SamplingParams p, out int token, out float logProb)
    {
        token = -1;
        logProb = 0f;
        if (p.IsGreedy)
        {
            int greedy = member.Softmax(row, vocab, 1f, null, out float top, out token, out float sum);
            if (greedy == KernelValidation.RowOk) logProb = CpuWarp.LogSoftmax(row[token], top, 1f, sum);
            return greedy;
        }
        float* weights = member.Team.Scratch(0);
        int status = member.Warp(row, vocab, p, weights, out float max, out _, out float fullSum);
        if (status != KernelValidation.RowOk) return status;
        token = member.Race(weights, vocab, p, p.Position, p.Stream);
        logProb = CpuWarp.LogSoftmax(row[token], max, 1f / p.Temperature, fullSum);
        return status;
    }
}
