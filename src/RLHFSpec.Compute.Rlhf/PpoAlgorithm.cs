using RLHFSpec.Compute.Generation;
using RLHFSpec.Compute.Model.Formats;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// PPO: a critic (initialised from the policy's trunk unless one is given) values every response token; per-token
/// rewards of −β·KL with the outcome reward on the last token, GAE, advantages whitened over the iteration; the policy
/// takes the clipped surrogate with an entropy bonus (no KL term: it is in the rewards), the critic a clipped value
/// loss with its own AdamW.
/// </summary>
internal sealed class PpoAlgorithm : IRlhfAlgorithm
{
    private const string OptimizerFile = "critic_optimizer.bin";

    private readonly RlhfConfig _config;
    private readonly ValueModel _critic;
    private readonly TensorArena _gradients;
    private readonly AdamW _optimizer;
    private readonly int _pad;

    private PpoAlgorithm(RlhfConfig config, ValueModel critic, int pad)
    {
        (_config, _critic, _pad) = (config, critic, pad);
        _gradients = new TensorArena(critic.Weights.Names.Select(n => (n, critic.Weights.Shape(n))));
        _optimizer = new AdamW(new AdamWOptions { Schedule = LearningRateSchedule.Constant(config.CriticLearningRate), WeightDecay = 0, MaxGradNorm = config.MaxGradNorm });
        foreach (var name in critic.Weights.Names) _optimizer.Add(name, critic.Weights.Memory(name), _gradients.Memory(name), DecoderGraphSpec.Decays(name));
    }

    /// <summary>Loads the critic: the run's own on resume, else the configured one, else the policy's trunk with a zero head.</summary>
    public static PpoAlgorithm Load(RlhfConfig config, string? latest, string policyFolder, string runFolder, RunWeights weights, OnnxSessionOptions session)
    {
        string criticSource = latest is not null ? Path.Combine(latest, RlhfTrainer.CriticFolder) : config.Critic ?? policyFolder;
        if (latest is null && config.Critic is not null && !Directory.Exists(config.Critic))
            throw new DirectoryNotFoundException($"critic: '{config.Critic}' is not a folder (a value-model or policy checkpoint in HF layout)");
        if (latest is not null && !Directory.Exists(criticSource))
            throw new DirectoryNotFoundException($"--resume '{runFolder}': checkpoint {latest} has no critic; was the run started with algorithm ppo?");
        using var criticCheckpoint = Checkpoint.Load(criticSource);
        if (criticCheckpoint.Config.VocabSize != weights.PolicyConfig.VocabSize || criticCheckpoint.Tokenizer.Fingerprint != weights.Tokenizer.Fingerprint)
            throw new InvalidDataException($"critic '{criticSource}': its vocabulary differs from the policy's (vocab_size {criticCheckpoint.Config.VocabSize} vs {weights.PolicyConfig.VocabSize}, or tokenizer contents)");
        var critic = ValueModel.Load(criticCheckpoint, session);
        try { return new PpoAlgorithm(config, critic, weights.Tokenizer.PadId ?? 0); }
        catch
        {
            critic.Dispose();
            throw;
        }
    }

    public RlhfAlgorithm Kind => RlhfAlgorithm.Ppo;
    public ValueModel? Critic => _critic;

    /// <summary>The KL is in the per-token rewards, so the loss has no KL term; per-token mean as in PPO.</summary>
    public PolicyLossSettings PolicyLoss => new(0, _config.Clip, _config.Clip, LossAggregation.TokenMean, _config.EntropyCoef);

    public ScoredRollouts Prepare(ScoredRollouts rollouts) => rollouts;

    /// <summary>The critic's values; a response cut at max_new_tokens (or the context) bootstraps from the critic's value after its last token.</summary>
    public RolloutMinibatch Evaluate(RolloutMinibatch minibatch, ScoredRollouts rollouts)
    {
        var results = rollouts.Results;
        var values = _critic.Values(minibatch.Batch);
        var cut = Enumerable.Range(0, minibatch.Rows.Length).Where(k => results[minibatch.Rows[k]].FinishReason != FinishReason.Stop).ToArray();
        var valueAtCut = new double[minibatch.Rows.Length];
        var atCut = _critic.ValuesAfter(cut.Select(k => (results[minibatch.Rows[k]].Request.Prompt, results[minibatch.Rows[k]].Tokens)).ToArray(), _pad);
        for (int j = 0; j < cut.Length; j++) valueAtCut[cut[j]] = atCut[j];
        return minibatch with { Values = values, ValueAtCut = valueAtCut };
    }

    /// <summary>
    /// PPO's targets from the inference stage's log-probs and critic values: per-token rewards r_t = −β(log π_old −
    /// log π_ref) with the outcome reward added on the last token of a response that ended, GAE (γ, λ) per response
    /// (bootstrapped from the critic's value at the cut for a response cut at max_new_tokens; see
    /// <see cref="Advantages.PpoResponseTargets"/>), advantages whitened over all response tokens of the iteration;
    /// each minibatch gets its advantages and returns [B, T]. Also the mean value and the explained variance of the
    /// returns by the values.
    /// </summary>
    public (IReadOnlyList<RolloutMinibatch> Minibatches, CriticStatistics? Critic) Targets(IReadOnlyList<RolloutMinibatch> minibatches, ScoredRollouts rollouts)
    {
        // [minibatch][row]: GAE over the row's response tokens.
        var targets = minibatches.Select(mb => Enumerable.Range(0, mb.Rows.Length).Select(row =>
        {
            var values = mb.Batch.Gather(mb.Values!, row).Select(v => (double)v).ToArray();
            var (advantages, returns) = Advantages.PpoResponseTargets(mb.Batch.Gather(mb.Old, row), mb.Batch.Gather(mb.Reference, row), values,
                rollouts.Rewards[mb.Rows[row]], rollouts.Results[mb.Rows[row]].FinishReason, mb.ValueAtCut![row], _config.KlBeta, _config.Gamma, _config.GaeLambda);
            return (Advantages: advantages, Returns: returns, Values: values);
        }).ToArray()).ToArray();
        var rows = targets.SelectMany(m => m).ToArray();

        var whitened = rows.SelectMany(r => r.Advantages).ToArray();
        Advantages.Whiten(whitened);
        int at = 0;
        var filled = new RolloutMinibatch[minibatches.Count];
        for (int m = 0; m < minibatches.Count; m++)
            filled[m] = minibatches[m] with
            {
                Advantages = minibatches[m].Batch.Scatter(targets[m].Select(r => r.Advantages.Select(_ => (float)whitened[at++]).ToArray()).ToArray()),
                Returns = minibatches[m].Batch.Scatter(targets[m].Select(r => r.Returns.Select(x => (float)x).ToArray()).ToArray()),
            };

        double varReturns = Variance(rows.SelectMany(r => r.Returns).ToArray());
        double varResidual = Variance(rows.SelectMany(r => r.Returns.Zip(r.Values, (g, v) => g - v)).ToArray());
        double valueMean = rows.SelectMany(r => r.Values).DefaultIfEmpty(0).Average();
        return (filled, new CriticStatistics(valueMean, varReturns > 0 ? 1 - varResidual / varReturns : 0));
    }

    private static double Variance(double[] x)
    {
        if (x.Length == 0) return 0;
        double mean = x.Average();
        return x.Average(v => (v - mean) * (v - mean));
    }

    public double? TrainCritic(RolloutMinibatch minibatch, int iteration)
    {
        var (valueLoss, _) = _critic.ValueLossGradients(_gradients, minibatch.Batch, minibatch.Values!, minibatch.Returns!, _config.ValueClip, _config.ValueCoef);
        double norm = _optimizer.Update();
        if (!double.IsFinite(norm)) throw new InvalidOperationException($"iteration {iteration}: non-finite critic gradient norm {norm}; lower critic_learning_rate");
        return valueLoss;
    }

    public void SaveCheckpoint(string folder, TextTokenizer tokenizer)
    {
        _critic.Save(Path.Combine(folder, RlhfTrainer.CriticFolder), tokenizer);
        _optimizer.Save(Path.Combine(folder, OptimizerFile));
    }

    public void LoadOptimizer(string folder) => _optimizer.Load(Path.Combine(folder, OptimizerFile));

    public void Dispose()
    {
        _critic.Dispose();
        _gradients.Dispose();
    }
}
