namespace RLHFSpec.Compute.Engine.Kernels;

internal static partial class KernelValidation
{
    internal static void Verify(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs)
    {
        // TODO(verify helper): full checks.
    }

    internal static void Sample(ReadOnlySpan<SamplingParams> rows, DeviceBuffer<float> logits, int vocabSize, Span<int> tokens, Span<float> logProbs)
    {
        // TODO(sample helper): full checks.
    }
}
