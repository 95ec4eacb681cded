namespace RLHFSpec.Compute.Rlhf;

/// <summary>Progress of a run, for progress bars and per-iteration lines.</summary>
public interface IRlhfObserver
{
    void StageStarted(int iteration, string stage, int total);
    void StageAdvanced(int value);
    void IterationFinished(IterationMetrics metrics);

    /// <summary>The held-out evaluation before training (iteration 0); later ones come with their iteration's metrics.</summary>
    void EvaluationFinished(EvaluationMetrics metrics) { }
}
