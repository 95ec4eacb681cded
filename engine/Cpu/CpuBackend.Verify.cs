using System.Buffers;
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
                ForEachItem(samples, vocab, scratchRows: 3, (ref CpuRowTeam.Member member, int s) =>
                {
                    long code = VerifySample(ref member, job, s);
                    if (member.Leads) status[s] = code;
                });
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

    /// <summary>
    /// One sample's walk down its draft tree, as <paramref name="member"/> of the team that verifies it (the leader
    /// writes the outputs). Returns 0, or a packed status of the bad logit row.
    /// </summary>
    private static unsafe long VerifySample(ref CpuRowTeam.Member member, in VerifyJob job, int s)
    {
        int vocab = job.Vocab;
        int nodeBase = job.Offsets[s], nodes = job.Offsets[s + 1] - nodeBase, rowBase = nodeBase + s;
        var p = job.Params[s];
        float invT = p.IsGreedy ? 1f : 1f / p.Temperature;
        bool leads = member.Leads;
        if (leads)
        {
            for (int i = 0; i < nodes; i++) job.AcceptedNodes[nodeBase + i] = -1;
            for (int i = 0; i <= nodes; i++) job.LogProbs[rowBase + i] = 0f;
        }
        int node = -1, pos = p.Position, accepted = 0, next;
        while (true)
        {
            long row = rowBase + node + 1;
            float* target = job.Target + row * vocab;
            int acceptedChild;
            float max, fullSum;
            if (p.IsGreedy)
            {
                int code = member.Softmax(target, vocab, 1f, null, out max, out int argmax, out fullSum);
                if (code != KernelValidation.RowOk) return PackStatus(code, row);
                acceptedChild = -1;
                for (int c = node + 1; c < nodes; c++)
                    if (job.Parents[nodeBase + c] == node && job.Tokens[nodeBase + c] == argmax) { acceptedChild = c; break; }
                next = argmax;
            }
            else
            {
                long status = DecideSampled(ref member, job, s, row, node, pos, out max, out acceptedChild, out next, out fullSum);
                if (status != 0) return status;
            }

            int emitted = acceptedChild >= 0 ? job.Tokens[nodeBase + acceptedChild] : next;
            if (leads) job.LogProbs[rowBase + accepted] = CpuWarp.LogSoftmax(target[emitted], max, invT, fullSum);
            if (acceptedChild < 0) break;
            if (leads) job.AcceptedNodes[nodeBase + accepted] = acceptedChild;
            accepted++;
            node = acceptedChild;
            pos++;
        }
        if (leads)
        {
            job.AcceptedCount[s] = accepted;
            job.NextToken[s] = next;
        }
        return 0;
    }

    /// <summary>
    /// A non-greedy node: its children in index order, accept x if u · q(x) &lt; p(x); else p ← norm(max(0, p − q))
    /// (Sampled) or p(x) ← 0 (Deterministic); with no child accepted, the exponential race over p gives
    /// <paramref name="next"/>. p lives unnormalised, with its mass, in scratch row 0 or 2 (swapped on a residual); q in row 1.
    /// </summary>
    private static unsafe long DecideSampled(ref CpuRowTeam.Member member, in VerifyJob job, int s, long row, int node, int pos,
        out float max, out int acceptedChild, out int next, out float fullSum)
    {
        int vocab = job.Vocab, nodeBase = job.Offsets[s], nodes = job.Offsets[s + 1] - nodeBase;
        var p = job.Params[s];
        float* P = member.Team.Scratch(0), Q = member.Team.Scratch(1), R = member.Team.Scratch(2);
        acceptedChild = -1;
        next = -1;
        member.Sync(); // every participant is done with the previous node's P and Q (its accept tests read any entry)
        int code = member.Warp(job.Target + row * vocab, vocab, p, P, out max, out float massP, out fullSum);
        if (code != KernelValidation.RowOk) return PackStatus(code, row);
        bool hasQ = false;
        float massQ = 1f;
        int attempt = 0;
        for (int c = node + 1; c < nodes; c++)
        {
            if (job.Parents[nodeBase + c] != node) continue;
            if (!hasQ && job.Kinds[s] == DraftKind.Sampled)
            {
                int draftCode = member.Warp(job.Draft + row * vocab, vocab, p, Q, out _, out massQ, out _);
                if (draftCode != KernelValidation.RowOk) return PackStatus(draftCode, -1 - row);
                hasQ = true;
            }
            int x = job.Tokens[nodeBase + c];
            float qx = hasQ ? Q[x] / massQ : 1f;
            float u = Philox.Uniform(p.SeedLo, p.SeedHi, pos, p.SampleId, RngStreams.Accept, (uint)attempt);
            if (u * qx < P[x] / massP) { acceptedChild = c; break; }
            attempt++;
            if (hasQ)
            {
                // Residual norm(max(0, P − Q)), kept unnormalised with its mass; R is read by no one until the swap.
                float mass = member.Residual(P, 1f / massP, Q, 1f / massQ, R, vocab);
                if (mass > 0f)
                {
                    float* swap = P;
                    P = R;
                    R = swap;
                    massP = mass;
                }
            }
            else massP = member.Drop(P, vocab, x, massP);
        }
        if (acceptedChild < 0) next = member.Race(P, vocab, p, pos, RngStreams.Target);
        return 0;
    }
}
