namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// Graph pieces for the RLHF losses, built from differentiable builder ops so that <see cref="Autodiff"/> can
/// take their gradients: target-token log-probs, masked means, the PPO clipped surrogate and the k3 KL estimator.
/// Shapes: logits [B, T, V], targets/masks/log-probs/advantages [B, T] (any leading shape works).
/// </summary>
public static class LossOps
{
    /// <summary>log softmax(logits)[target] per position: logits [.., V], targets int64 [..] → [..].</summary>
    public static Value TokenLogProbs(GraphBuilder g, Value logits, Value targets)
    {
        if (targets.Rank != logits.Rank - 1)
            throw new ArgumentException($"TokenLogProbs: targets {targets} must have one axis less than logits {logits}", nameof(targets));
        var picked = g.GatherElements(g.LogSoftmax(logits, -1), g.Unsqueeze(targets, -1), -1);
        return g.Squeeze(picked, -1);
    }

    /// <summary>Σ x·mask / max(Σ mask, 1) over all elements: a scalar; an all-zero mask gives 0, not NaN.</summary>
    public static Value MaskedMean(GraphBuilder g, Value x, Value mask)
    {
        // Same rank required: a broadcast mask would be counted once but weigh many elements.
        if (x.Rank != mask.Rank) throw new ArgumentException($"MaskedMean: mask {mask} must have the rank of {x}", nameof(mask));
        var weighted = g.Mul(x, mask);
        if (x.Rank == 0) return g.Div(weighted, g.Clip(mask, 1, null));
        var all = Enumerable.Range(0, x.Rank).ToArray();
        var count = g.ReduceSum(mask, all, keepDims: false);
        return g.Div(g.ReduceSum(weighted, all, keepDims: false), g.Clip(count, 1, null));
    }

    /// <summary>
    /// Per-sequence masked mean over the last axis, then the plain mean over sequences: x, mask [B, T] → scalar.
    /// A sequence whose mask is all zero contributes 0 (and still counts as a sequence).
    /// </summary>
    public static Value SequenceMean(GraphBuilder g, Value x, Value mask)
    {
        if (x.Rank != 2 || mask.Rank != 2) throw new ArgumentException($"SequenceMean: x {x} and mask {mask} must be [B, T]");
        var perSequence = g.Div(g.ReduceSum(g.Mul(x, mask), new[] { 1 }, keepDims: false),
            g.Clip(g.ReduceSum(mask, new[] { 1 }, keepDims: false), 1, null));
        return g.ReduceMean(perSequence, new[] { 0 }, keepDims: false);
    }

    /// <summary>
    /// PPO clipped surrogate per token, negated for minimisation: −min(r·A, clip(r, 1 − εlow, 1 + εhigh)·A) with
    /// r = exp(logp − oldLogp). Asymmetric ε as in DAPO's clip-higher; pass equal values for classic PPO/GRPO.
    /// </summary>
    public static Value PpoClipPerToken(GraphBuilder g, Value logp, Value oldLogp, Value advantages,
        double clipLow = 0.2, double clipHigh = 0.2)
    {
        if (!(clipLow >= 0 && clipLow < 1) || !(clipHigh >= 0))
            throw new ArgumentException($"PpoClipPerToken: clip range must satisfy 0 <= low < 1 and high >= 0, got low {clipLow}, high {clipHigh}");
        var ratio = g.Exp(g.Sub(logp, oldLogp));
        var unclipped = g.Mul(ratio, advantages);
        var clipped = g.Mul(g.Clip(ratio, 1 - clipLow, 1 + clipHigh), advantages);
        return g.Neg(g.Min(unclipped, clipped));
    }

    /// <summary>
    /// k3 estimator of KL(π ‖ π_ref) per token (Schulman): exp(ref − logp) − (ref − logp) − 1; non-negative,
    /// unbiased under samples from π, and smooth in logp.
    /// </summary>
    public static Value KlK3PerToken(GraphBuilder g, Value logp, Value refLogp)
    {
        var d = g.Sub(refLogp, logp);
        return g.Sub(g.Sub(g.Exp(d), d), g.Scalar(1, logp.Type));
    }

    /// <summary>
    /// The policy loss of one RLHF step: masked mean over tokens of the PPO clipped surrogate plus β times the
    /// k3 KL to the reference (β = 0 leaves the reference input unused), averaged per token or per sequence. With
    /// group-normalised advantages (computed outside the graph) and <see cref="LossAggregation.SequenceMean"/> this
    /// is GRPO's objective.
    /// </summary>
    public static Value PolicyLoss(GraphBuilder g, Value logp, Value oldLogp, Value advantages, Value mask,
        Value? refLogp = null, double klBeta = 0, double clipLow = 0.2, double clipHigh = 0.2,
        LossAggregation aggregation = LossAggregation.TokenMean)
    {
        if (klBeta < 0) throw new ArgumentException($"PolicyLoss: KL coefficient must be >= 0, got {klBeta}", nameof(klBeta));
        var perToken = PpoClipPerToken(g, logp, oldLogp, advantages, clipLow, clipHigh);
        if (klBeta > 0)
        {
            if (refLogp is null) throw new ArgumentException("PolicyLoss: a KL coefficient > 0 needs reference log-probs", nameof(refLogp));
            perToken = g.Add(perToken, g.Mul(KlK3PerToken(g, logp, refLogp), g.Scalar(klBeta, logp.Type)));
        }
        return Aggregate(g, perToken, mask, aggregation);
    }

    /// <summary>A per-token loss [B, T] reduced to a scalar over the mask, per token or per sequence.</summary>
    public static Value Aggregate(GraphBuilder g, Value perToken, Value mask, LossAggregation aggregation) =>
        aggregation == LossAggregation.SequenceMean ? SequenceMean(g, perToken, mask) : MaskedMean(g, perToken, mask);

    /// <summary>Entropy of softmax(logits) per position: −Σ_v p_v log p_v; logits [.., V] → [..].</summary>
    public static Value EntropyPerToken(GraphBuilder g, Value logits)
    {
        var plogp = g.Mul(g.Softmax(logits, -1), g.LogSoftmax(logits, -1));
        return g.Neg(g.ReduceSum(plogp, new[] { logits.Rank - 1 }, keepDims: false));
    }

    /// <summary>
    /// PPO's clipped value loss per token: ½·max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²) with R the
    /// returns and V_old the values the returns were computed with: the critic gains nothing by moving a value more
    /// than ε from V_old. Shapes [..], all alike.
    /// </summary>
    public static Value ClippedValueLossPerToken(GraphBuilder g, Value values, Value oldValues, Value returns, double clip)
    {
        if (!(clip > 0) || !double.IsFinite(clip)) throw new ArgumentException($"ClippedValueLossPerToken: clip must be a finite number > 0, got {clip}", nameof(clip));
        var clipped = g.Add(oldValues, g.Clip(g.Sub(values, oldValues), -clip, clip));
        var plain = g.Sub(values, returns);
        var moved = g.Sub(clipped, returns);
        return g.Mul(g.Max(g.Mul(plain, plain), g.Mul(moved, moved)), g.Scalar(0.5, values.Type));
    }
}
