using System.Buffers;
using System.Numerics.Tensors;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    protected override unsafe void VerifyCore(in VerifyBatch batch, DeviceBuffer<float> targetLogits, DeviceBuffer<float>? draftLogits, in VerifyOutputs outputs)
    {
        float* target = Host(targetLogits, nameof(targetLogits)).Pointer;
        float* draft = draftLogits != null ? Host(draftLogits, nameof(draftLogits)).Pointer : null;
        int samples = batch.NumSamples, vocab = batch.VocabSize;
        // Per sample: status code and the row it concerns (a negative row: the draft buffer's row −1 − row).
        var status = ArrayPool<long>.Shared.Rent(samples);
        try
        {
            fixed (int* offsetsFixed = batch.NodeOffsets)
            fixed (int* tokensFixed = batch.DraftTokens)
            fixed (int* parentsFixed = batch.Parents)
            fixed (SamplingParams* paramsFixed = batch.Params)
            fixed (DraftKind* kindsFixed = batch.Kinds)
            fixed (int* countFixed = outputs.AcceptedCount)
            fixed (int* nodesFixed = outputs.AcceptedNodes)
            fixed (int* nextFixed = outputs.NextToken)
            fixed (float* logProbsFixed = outputs.LogProbs)
            {
                var job = new VerifyJob
                {
                    Offsets = offsetsFixed, Tokens = tokensFixed, Parents = parentsFixed, Params = paramsFixed, Kinds = kindsFixed,
                    Target = target, Draft = draft, Vocab = vocab,
                    AcceptedCount = countFixed, AcceptedNodes = nodesFixed, NextToken = nextFixed, LogProbs = logProbsFixed,
                };
                ForEachRow(samples, vocab, 3 * vocab, (s, scratch) => status[s] = VerifySample(job, s, scratch));
            }
            for (int s = 0; s < samples; s++)
            {
                if (status[s] == 0) continue;
                int code = (int)(status[s] >> 40);
                long row = (status[s] & 0xFF_FFFF_FFFFL) - (1L << 39);
                if (row >= 0) KernelValidation.ThrowBadRow(code, nameof(targetLogits), row);
                else KernelValidation.ThrowBadRow(code, nameof(draftLogits), -1 - row);
            }
        }
        finally
        {
            ArrayPool<long>.Shared.Return(status);
        }
    }

    /// <summary>Raw views of a verify call's spans, for the parallel workers.</summary>
    private unsafe struct VerifyJob
    {
        public int* Offsets, Tokens, Parents;
        public SamplingParams* Params;
        public DraftKind* Kinds;
        public float* Target, Draft;
        public int Vocab;
        public int* AcceptedCount, AcceptedNodes, NextToken;
        public float* LogProbs;
    }

    private static long PackStatus(int code, long row) => ((long)code << 40) | (row + (1L << 39));

    /// <summary>One sample's walk down its draft tree. Returns 0, or a packed status of the bad logit row.</summary>
    private static unsafe long VerifySample(in VerifyJob job, int s, float[] scratch)
    {
        int vocab = job.Vocab;
        int nodeBase = job.Offsets[s], nodes = job.Offsets[s + 1] - nodeBase, rowBase = nodeBase + s;
        var p = job.Params[s];
        float invT = p.IsGreedy ? 1f : 1f / p.Temperature;
        var P = scratch.AsSpan(0, vocab);
        var Q = scratch.AsSpan(vocab, vocab);
        var R = scratch.AsSpan(2 * vocab, vocab);
        int node = -1, pos = p.Position, accepted = 0, next;
        for (int i = 0; i < nodes; i++) job.AcceptedNodes[nodeBase + i] = -1;
        for (int i = 0; i <= nodes; i++) job.LogProbs[rowBase + i] = 0f;

        while (true)
        {
            long row = rowBase + node + 1;
            var target = new ReadOnlySpan<float>(job.Target + row * vocab, vocab);
            int code = CpuWarp.RowMax(target, out float max);
            if (code != KernelValidation.RowOk) return PackStatus(code, row);

            int acceptedChild = -1;
            float fullSum;
            if (p.IsGreedy)
            {
                int a = CpuWarp.FirstIndexOf(target, max);
                fullSum = CpuWarp.SumExpShifted(target, max);
                for (int c = node + 1; c < nodes; c++)
                    if (job.Parents[nodeBase + c] == node && job.Tokens[nodeBase + c] == a) { acceptedChild = c; break; }
                next = a;
            }
            else
            {
                float massP = CpuWarp.Warp(target, max, p, P, out fullSum);
                bool hasQ = false;
                float massQ = 1f;
                int attempt = 0;
                for (int c = node + 1; c < nodes; c++)
                {
                    if (job.Parents[nodeBase + c] != node) continue;
                    if (!hasQ && job.Kinds[s] == DraftKind.Sampled)
                    {
                        var draft = new ReadOnlySpan<float>(job.Draft + row * vocab, vocab);
                        int draftCode = CpuWarp.RowMax(draft, out float draftMax);
                        if (draftCode != KernelValidation.RowOk) return PackStatus(draftCode, -1 - row);
                        massQ = CpuWarp.Warp(draft, draftMax, p, Q, out _);
                        hasQ = true;
                    }
                    int x = job.Tokens[nodeBase + c];
                    float qx = hasQ ? Q[x] / massQ : 1f;
                    float u = Philox.Uniform(p.SeedLo, p.SeedHi, pos, p.SampleId, RngStreams.Accept, (uint)attempt);
                    if (u * qx < P[x] / massP) { acceptedChild = c; break; }
                    attempt++;
                    if (hasQ)
                    {
                        // Residual norm(max(0, P − Q)), kept unnormalised with its mass.
                        TensorPrimitives.Multiply(P, 1f / massP, R);
                        TensorPrimitives.MultiplyAdd(Q, -1f / massQ, R, R);
                        TensorPrimitives.Max(R, 0f, R);
                        float mass = TensorPrimitives.Sum(R);
                        if (mass > 0f)
                        {
                            R.CopyTo(P);
                            massP = mass;
                        }
                    }
                    else
                    {
                        float old = P[x];
                        P[x] = 0f;
                        float mass = TensorPrimitives.Sum(P);
                        if (mass > 0f) massP = mass;
                        else P[x] = old;
                    }
                }
                next = acceptedChild < 0 ? CpuWarp.Race(P, p, pos, RngStreams.Target) : -1;
            }

            int emitted = acceptedChild >= 0 ? job.Tokens[nodeBase + acceptedChild] : next;
            job.LogProbs[rowBase + accepted] = CpuWarp.LogSoftmax(target[emitted], max, invT, fullSum);
            if (acceptedChild < 0) break;
            job.AcceptedNodes[nodeBase + accepted] = acceptedChild;
            accepted++;
            node = acceptedChild;
            pos++;
        }
        job.AcceptedCount[s] = accepted;
        job.NextToken[s] = next;
        return 0;
    }
}
