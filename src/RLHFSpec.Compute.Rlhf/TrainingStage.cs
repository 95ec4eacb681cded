namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The training stage: <c>epochs</c> passes over the iteration's minibatches in a seeded shuffled order; per
/// minibatch one policy step (the algorithm's loss, gradients from the project's autodiff, AdamW in place on the
/// weights generation reads) and, with a critic, one critic step.
/// </summary>
internal sealed class TrainingStage(RlhfConfig config, RunWeights weights, RunModels models, IRlhfAlgorithm algorithm)
{
    public IterationBatch Run(IterationBatch batch, IRlhfObserver? observer)
    {
        int iteration = batch.Iteration;
        var minibatches = batch.Minibatches;
        observer?.StageStarted(iteration, "training", config.Epochs * minibatches.Count);
        var settings = algorithm.PolicyLoss;
        double lossSum = 0, normSum = 0, valueLossSum = 0;
        int steps = 0;
        var shuffle = new Random(unchecked(config.Seed * 31 + iteration));
        for (int epoch = 0; epoch < config.Epochs; epoch++)
            foreach (var mb in minibatches.OrderBy(_ => shuffle.Next()).ToList())
            {
                var (loss, _) = models.PolicyGraphs.PolicyLossGradients(weights.Policy.Arena, models.Gradients, mb.Batch, mb.Old, mb.Advantages!, mb.Reference, settings);
                double norm = models.Optimizer.Update();
                if (!double.IsFinite(norm)) throw new InvalidOperationException($"iteration {iteration}: non-finite gradient norm {norm}; lower learning_rate");
                lossSum += loss;
                normSum += norm;
                if (algorithm.TrainCritic(mb, iteration) is { } valueLoss) valueLossSum += valueLoss;
                steps++;
                observer?.StageAdvanced(steps);
            }
        double? meanValueLoss = algorithm.Critic is null ? null : steps == 0 ? 0 : valueLossSum / steps;
        return batch with { Training = new TrainingStageResult(steps, steps == 0 ? 0 : lossSum / steps, steps == 0 ? 0 : normSum / steps, meanValueLoss) };
    }
}
