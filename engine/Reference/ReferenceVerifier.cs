using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Engine.Reference;

/// <summary>
/// Plain reference of the verify kernel, written straight from the algorithm (SpecInfer multi-step speculative
/// sampling for <see cref="DraftKind.Sampled"/> children, sampling from p restricted to untried children for
/// <see cref="DraftKind.Deterministic"/> ones, accept-while-argmax when greedy), in double with normalised
/// distributions. Shares no code with the backends.
/// </summary>
public static class ReferenceVerifier
{
    /// <param name="targetLogits">// [batch.TotalRows, VocabSize]</param>
    /// <param name="draftLogits">// [batch.TotalRows, VocabSize], or empty when no sample needs q.</param>
    public static void Verify(in VerifyBatch batch, ReadOnlySpan<float> targetLogits, ReadOnlySpan<float> draftLogits, in VerifyOutputs outputs)
    {
        int vocab = batch.VocabSize;
        for (int s = 0; s < batch.NumSamples; s++)
        {
            int nodeBase = batch.NodeOffsets[s];
            int nodes = batch.NodeOffsets[s + 1] - nodeBase;
            int rowBase = batch.RowOffset(s);
            var p = batch.Params[s];
            double temperature = p.IsGreedy ? 1.0 : p.Temperature;
            int node = -1, pos = p.Position, accepted = 0, next = -1;
            for (int i = 0; i < nodes; i++) outputs.AcceptedNodes[nodeBase + i] = -1;
            for (int i = 0; i <= nodes; i++) outputs.LogProbs[rowBase + i] = 0f;

            while (true)
            {
                int row = rowBase + node + 1;
                var target = targetLogits.Slice(row * vocab, vocab);
                ReferenceSampler.CheckRow(target, "targetLogits", row);
                var children = new List<int>();
                for (int c = node + 1; c < nodes; c++)
                    if (batch.Parents[nodeBase + c] == node) children.Add(c);

                int acceptedChild = -1;
                if (p.IsGreedy)
                {
                    int a = ReferenceSampler.Argmax(target);
                    foreach (int c in children)
                        if (batch.DraftTokens[nodeBase + c] == a) { acceptedChild = c; break; }
                    if (acceptedChild < 0) next = a;
                }
                else
                {
                    var P = ReferenceSampler.Distribution(target, p);
                    double[]? Q = null;
                    if (batch.Kinds[s] == DraftKind.Sampled && children.Count > 0)
                    {
                        var draft = draftLogits.Slice(row * vocab, vocab);
                        ReferenceSampler.CheckRow(draft, "draftLogits", row);
                        Q = ReferenceSampler.Distribution(draft, p);
                    }
                    for (int j = 0; j < children.Count && acceptedChild < 0; j++)
                    {
                        int x = batch.DraftTokens[nodeBase + children[j]];
                        double qx = Q != null ? Q[x] : 1.0;
                        double u = Philox.Uniform(p.SeedLo, p.SeedHi, pos, p.SampleId, RngStreams.Accept, (uint)j);
                        if (u * qx < P[x]) { acceptedChild = children[j]; break; }
                        var residual = new double[vocab];
                        if (Q != null)
                            for (int i = 0; i < vocab; i++) residual[i] = Math.Max(0, P[i] - Q[i]);
                        else
                        {
                            Array.Copy(P, residual, vocab);
                            residual[x] = 0;
                        }
                        double mass = 0;
                        foreach (double r in residual) mass += r;
                        if (mass > 0)
                            for (int i = 0; i < vocab; i++) P[i] = residual[i] / mass;
                    }
                    if (acceptedChild < 0) next = ReferenceSampler.Race(P, p, pos, RngStreams.Target);
                }

                int emitted = acceptedChild >= 0 ? batch.DraftTokens[nodeBase + acceptedChild] : next;
                outputs.LogProbs[rowBase + accepted] = (float)ReferenceSampler.LogSoftmax(target, temperature, emitted);
                if (acceptedChild < 0) break;
                outputs.AcceptedNodes[nodeBase + accepted] = acceptedChild;
                accepted++;
                node = acceptedChild;
                pos++;
            }
            outputs.AcceptedCount[s] = accepted;
            outputs.NextToken[s] = next;
        }
    }
}
