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
    /// <paramref name="next"/>. p lives unnormalised, with its mass, in scratch row 0 or 2 (swapped on a residual); q in
    /// row 1. Without top-k/top-p an accept test needs only p(x), q(x) and the masses, so the weights are written out
    /// only once a child is rejected, or in the first pass over a row that has no child to test (the race needs them):
    /// an accepted node costs one pass per row, as greedy does, and so does the bonus row before its race.
    /// </summary>
    private static unsafe long DecideSampled(ref CpuRowTeam.Member member, in VerifyJob job, int s, long row, int node, int pos,
        out float max, out int acceptedChild, out int next, out float fullSum)
    {
        int vocab = job.Vocab, nodeBase = job.Offsets[s], nodes = job.Offsets[s + 1] - nodeBase;
        var p = job.Params[s];
        float* R = member.Team.Scratch(2);
        acceptedChild = -1;
        next = -1;
        member.Sync(); // every participant is done with the previous node's P and Q (its accept tests read any entry)
        var P = new WarpedRow(job.Target + row * vocab, member.Team.Scratch(0));
        int code = P.Prepare(ref member, vocab, p, write: !HasChild(job, s, node));
        max = P.Max;
        fullSum = P.FullSum;
        if (code != KernelValidation.RowOk) return PackStatus(code, row);
        var Q = new WarpedRow(job.Draft + row * vocab, member.Team.Scratch(1));
        bool hasQ = false;
        int attempt = 0;
        for (int c = node + 1; c < nodes; c++)
        {
            if (job.Parents[nodeBase + c] != node) continue;
            if (!hasQ && job.Kinds[s] == DraftKind.Sampled)
            {
                int draftCode = Q.Prepare(ref member, vocab, p, write: false);
                if (draftCode != KernelValidation.RowOk) return PackStatus(draftCode, -1 - row);
                hasQ = true;
            }
            int x = job.Tokens[nodeBase + c];
            float qx = hasQ ? Q.Weight(x, p) / Q.Mass : 1f;
            float u = Philox.Uniform(p.SeedLo, p.SeedHi, pos, p.SampleId, RngStreams.Accept, (uint)attempt);
            if (u * qx < P.Weight(x, p) / P.Mass) { acceptedChild = c; break; }
            attempt++;
            P.Write(ref member, vocab, p);
            if (hasQ)
            {
                // Residual norm(max(0, P − Q)), kept unnormalised with its mass; R is read by no one until the swap.
                Q.Write(ref member, vocab, p);
                float mass = member.Residual(P.Weights, 1f / P.Mass, Q.Weights, 1f / Q.Mass, R, vocab);
                if (mass > 0f)
                {
                    float* swap = P.Weights;
                    P.Weights = R;
                    R = swap;
                    P.Mass = mass;
                }
            }
            else P.Mass = member.Drop(P.Weights, vocab, x, P.Mass);
        }
        if (acceptedChild >= 0) return 0;
        P.Write(ref member, vocab, p);
        next = member.Race(P.Weights, vocab, p, pos, RngStreams.Target);
        return 0;
    }

    /// <summary>Whether <paramref name="node"/> (−1: the root) of sample <paramref name="s"/> has a drafted child.</summary>
    private static unsafe bool HasChild(in VerifyJob job, int s, int node)
    {
        for (int c = job.Offsets[s] + node + 1; c < job.Offsets[s + 1]; c++)
            if (job.Parents[c] == node) return true;
        return false;
    }

    /// <summary>A warped logit row whose weights (in <see cref="Weights"/>) are written out only when needed.</summary>
    private unsafe struct WarpedRow(float* logits, float* weights)
    {
        public float* Weights = weights;
        public float Max, Mass, FullSum;
        private bool _written;

        /// <summary>
        /// Max, masses and the weights if <paramref name="write"/> (a row without children to test goes straight to the
        /// race, which needs them) or top-k/top-p need them; returns the row's status.
        /// </summary>
        public int Prepare(ref CpuRowTeam.Member member, int vocab, in SamplingParams p, bool write)
        {
            _written = write || CpuWarp.Truncates(p, vocab);
            if (_written) return member.Warp(logits, vocab, p, Weights, out Max, out Mass, out FullSum);
            int status = member.Softmax(logits, vocab, 1f / p.Temperature, null, out Max, out _, out Mass);
            FullSum = Mass;
            return status;
        }

        /// <summary>The unnormalised weight of token <paramref name="x"/>.</summary>
        public readonly float Weight(int x, in SamplingParams p) =>
            _written ? Weights[x] : logits[x] == float.NegativeInfinity ? 0f : MathF.Exp((logits[x] - Max) * (1f / p.Temperature));

        /// <summary>Writes the weights out (their sum is <see cref="Mass"/> already).</summary>
        public void Write(ref CpuRowTeam.Member member, int vocab, in SamplingParams p)
        {
            if (_written) return;
            member.Softmax(logits, vocab, 1f / p.Temperature, Weights, out _, out _, out _);
            _written = true;
        }
    }
}
