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
public sealed record PretrainedModel(string Name, long Parameters, int Steps, long TrainTokens, double InitialLoss,
    double FinalLoss, double TokenAccuracy, double ExactAccuracy, int EvalPrompts, double TrainSeconds, double TrainCpuSeconds, double EvalSeconds);
