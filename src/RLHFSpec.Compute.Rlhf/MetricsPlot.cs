namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The run's PNG plot over iterations: mean reward, KL to the reference and the held-out evaluation (accuracy and
/// mean reward, iteration 0 = before training) on the left axis, generation throughput (tokens/s) on the right axis;
/// the x axis ticks whole iterations. Written to a temporary file, then renamed.
/// </summary>
public static class MetricsPlot
{
    public static void Write(string path, IReadOnlyList<IterationMetrics> history, IReadOnlyList<EvaluationMetrics>? evaluations = null)
    {
        evaluations ??= [];
        if (history.Count == 0 && evaluations.Count == 0) return;
        var plot = new ScottPlot.Plot();
        if (history.Count > 0)
        {
            var x = history.Select(m => (double)m.Iteration).ToArray();
            var reward = plot.Add.Scatter(x, history.Select(m => m.RewardMean).ToArray());
            reward.LegendText = "mean reward (rollouts)";
            var kl = plot.Add.Scatter(x, history.Select(m => m.Kl).ToArray());
            kl.LegendText = "KL to reference";
            var throughput = plot.Add.Scatter(x, history.Select(m => m.GenerationTokensPerSecond).ToArray());
            throughput.LegendText = "generation tokens/s (right axis)";
            throughput.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "tokens/s";
        }
        if (evaluations.Count > 0)
        {
            var x = evaluations.Select(e => (double)e.Iteration).ToArray();
            var accuracy = plot.Add.Scatter(x, evaluations.Select(e => e.Accuracy).ToArray());
            accuracy.LegendText = "held-out accuracy";
            accuracy.LineWidth = 3;
            accuracy.MarkerSize = 9;
            var reward = plot.Add.Scatter(x, evaluations.Select(e => e.RewardMean).ToArray());
            reward.LegendText = "held-out mean reward";
            reward.LinePattern = ScottPlot.LinePattern.Dashed;
        }
        plot.Axes.Left.Label.Text = "reward, accuracy, KL";
        // Iterations are whole numbers: no tick at 1.5.
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        plot.XLabel("iteration");
        plot.Title("RLHF run");
        plot.ShowLegend();
        Save(plot, path);
    }

    /// <summary>Saves a plot as a 900 × 540 PNG through a temporary file renamed into place.</summary>
    public static void Save(ScottPlot.Plot plot, string path)
    {
        string temp = path + ".tmp.png";
        plot.SavePng(temp, 900, 540);
        File.Move(temp, path, overwrite: true);
    }
}
