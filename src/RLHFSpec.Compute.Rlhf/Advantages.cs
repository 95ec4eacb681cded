using RLHFSpec.Compute.Generation;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// Advantage estimators of the two trainers: GRPO's group-normalised outcome rewards (one scalar per response,
/// broadcast to its tokens) and PPO's generalised advantage estimation over per-token rewards and critic values.
/// </summary>
public static class Advantages
{
    /// <summary>
    /// GRPO: each response's reward minus its group's mean, divided by the group's standard deviation (population,
    /// plus <paramref name="epsilon"/>); groups are the responses to one prompt. With <paramref name="scaleByStd"/>
    /// false only the mean is subtracted (Dr. GRPO).
    /// </summary>
    /// <param name="rewards">[responses]</param>
    /// <param name="groups">[responses] group (prompt) id of each response.</param>
    public static double[] GroupNormalized(ReadOnlySpan<double> rewards, ReadOnlySpan<int> groups, bool scaleByStd = true, double epsilon = 1e-6)
    {
        if (rewards.Length != groups.Length) throw new ArgumentException($"rewards ({rewards.Length}) and groups ({groups.Length}) differ in length", nameof(groups));
        var sums = new Dictionary<int, (double Sum, double SumSq, int Count)>();
        for (int i = 0; i < rewards.Length; i++)
        {
            if (!double.IsFinite(rewards[i])) throw new ArgumentException($"reward {i} = {rewards[i]} is not finite", nameof(rewards));
            var (s, q, c) = sums.GetValueOrDefault(groups[i]);
            sums[groups[i]] = (s + rewards[i], q + rewards[i] * rewards[i], c + 1);
        }
        var advantages = new double[rewards.Length];
        for (int i = 0; i < rewards.Length; i++)
        {
            var (s, q, c) = sums[groups[i]];
            double mean = s / c;
            double std = Math.Sqrt(Math.Max(0, q / c - mean * mean));
            advantages[i] = scaleByStd ? (rewards[i] - mean) / (std + epsilon) : rewards[i] - mean;
        }
        return advantages;
    }

    /// <summary>
    /// PPO: generalised advantage estimation for one response of T tokens. δ_t = r_t + γ V_{t+1} − V_t, with V_T =
    /// <paramref name="bootstrapValue"/> (0 when the episode ended; the critic's value after the last token when it was
    /// cut), A_t = δ_t + γλ A_{t+1}; returns (advantages, returns = A + V).
    /// </summary>
    /// <param name="rewards">[T] per-token reward (e.g. the KL penalty, plus the outcome reward on the last token).</param>
    /// <param name="values">[T] critic values.</param>
    public static (double[] Advantages, double[] Returns) Gae(ReadOnlySpan<double> rewards, ReadOnlySpan<double> values, double gamma, double lambda,
        double bootstrapValue = 0)
    {
        if (rewards.Length != values.Length) throw new ArgumentException($"rewards ({rewards.Length}) and values ({values.Length}) differ in length", nameof(values));
        if (!(gamma >= 0 && gamma <= 1)) throw new ArgumentOutOfRangeException(nameof(gamma), $"gamma {gamma}: must be in [0, 1]");
        if (!(lambda >= 0 && lambda <= 1)) throw new ArgumentOutOfRangeException(nameof(lambda), $"lambda {lambda}: must be in [0, 1]");
        int n = rewards.Length;
        var advantages = new double[n];
        var returns = new double[n];
        if (!double.IsFinite(bootstrapValue)) throw new ArgumentException($"bootstrap value {bootstrapValue} is not finite", nameof(bootstrapValue));
        double next = 0, nextValue = bootstrapValue;
        for (int t = n - 1; t >= 0; t--)
        {
            double delta = rewards[t] + gamma * nextValue - values[t];
            next = delta + gamma * lambda * next;
            advantages[t] = next;
            returns[t] = next + values[t];
            nextValue = values[t];
        }
        return (advantages, returns);
    }

    /// <summary>
    /// PPO's per-token rewards of one response: −β(log π_old − log π_ref) at every token (a KL penalty), plus the
    /// outcome reward (the response's score) on the last token.
    /// </summary>
    /// <param name="logProbs">[T] log-probs of the response tokens under the rollout policy.</param>
    /// <param name="refLogProbs">[T] the same under the reference.</param>
    public static double[] KlPenalizedRewards(ReadOnlySpan<float> logProbs, ReadOnlySpan<float> refLogProbs, double klBeta, double outcome)
    {
        if (logProbs.Length != refLogProbs.Length) throw new ArgumentException($"log-probs ({logProbs.Length}) and reference log-probs ({refLogProbs.Length}) differ in length", nameof(refLogProbs));
        var rewards = new double[logProbs.Length];
        for (int t = 0; t < rewards.Length; t++) rewards[t] = -klBeta * ((double)logProbs[t] - refLogProbs[t]);
        if (rewards.Length > 0) rewards[^1] += outcome;
        return rewards;
    }

    /// <summary>
    /// PPO's targets for one response. One that ended (<see cref="FinishReason.Stop"/>) is terminal: its outcome reward
    /// is on its last token and nothing follows. One cut at max_new_tokens or at the context (<see cref="FinishReason.Length"/>,
    /// <see cref="FinishReason.Context"/>) has not ended: its outcome is not known yet (the score of the unfinished text is
    /// not given), and GAE bootstraps from <paramref name="valueAtCut"/>, the critic's value of the state after its last
    /// token, as PPO does at a time limit.
    /// </summary>
    /// <param name="logProbs">[T] rollout-policy log-probs of the response tokens.</param>
    /// <param name="refLogProbs">[T] the reference's.</param>
    /// <param name="values">[T] critic values before each token.</param>
    public static (double[] Advantages, double[] Returns) PpoResponseTargets(ReadOnlySpan<float> logProbs, ReadOnlySpan<float> refLogProbs,
        ReadOnlySpan<double> values, double outcome, FinishReason finish, double valueAtCut, double klBeta, double gamma, double lambda)
    {
        bool ended = finish == FinishReason.Stop;
        var rewards = KlPenalizedRewards(logProbs, refLogProbs, klBeta, ended ? outcome : 0);
        return Gae(rewards, values, gamma, lambda, ended ? 0 : valueAtCut);
    }

    /// <summary>Whitens advantages over a batch (mean 0, standard deviation 1), as PPO does per minibatch or batch.</summary>
    public static void Whiten(Span<double> advantages, double epsilon = 1e-8)
    {
        if (advantages.Length == 0) return;
        double mean = 0;
        foreach (double a in advantages) mean += a;
        mean /= advantages.Length;
        double variance = 0;
        foreach (double a in advantages) variance += (a - mean) * (a - mean);
        double scale = 1 / Math.Sqrt(variance / advantages.Length + epsilon);
        for (int i = 0; i < advantages.Length; i++) advantages[i] = (advantages[i] - mean) * scale;
    }
}
