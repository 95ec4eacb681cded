namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// The record of one pretrained model (one entry of pretrain.json).
/// </summary>
/// <param name="Name">Folder name under the output folder.</param>
/// <param name="Parameters">Number of weights.</param>
/// <param name="Steps">Optimizer steps run.</param>
/// <param name="TrainTokens">Target tokens the loss was taken over, summed over all steps.</param>
/// <param name="InitialLoss">Mean loss (nats per token) of the first steps.</param>
/// <param name="FinalLoss">Mean loss of the last steps.</param>
/// <param name="TokenAccuracy">Teacher-forced next-token accuracy on the evaluation set's response and EOS tokens.</param>
/// <param name="ExactAccuracy">Fraction of evaluation prompts whose greedy response earns reward 1.</param>
/// <param name="EvalPrompts">Number of evaluation prompts.</param>
/// <param name="TrainSeconds">Wall time of training.</param>
/// <param name="TrainCpuSeconds">Processor time of training, all threads (wall time × cores on an idle machine; on a
/// shared one it says what the run would take alone).</param>
/// <param name="EvalSeconds">Wall time of evaluation.</param>
/// <param name="Source">How the starting weights were made: null = random initialisation (trained from scratch), else
/// a description of the growth the training fine-tuned (<see cref="PretrainModelSpec.GrowthStart.Describe"/>).</param>
/// <param name="GrowSeconds">Wall time of loading and growing the source (0 from scratch).</param>
/// <param name="PeakLearningRate">The learning-rate schedule's peak.</param>
/// <param name="TokensPerBatch">Tokens per training batch (about).</param>
public sealed record PretrainedModel(string Name, long Parameters, int Steps, long TrainTokens, double InitialLoss,
    double FinalLoss, double TokenAccuracy, double ExactAccuracy, int EvalPrompts, double TrainSeconds, double TrainCpuSeconds, double EvalSeconds,
    string? Source = null, double GrowSeconds = 0, double PeakLearningRate = 0, int TokensPerBatch = 0);
