namespace RLHFSpec.Compute.Rlhf;

/// <summary>
/// The run's PNG plot over iterations: mean reward and KL to the reference on the left axis, generation
/// throughput (tokens/s) on the right axis. Written to a temporary file, then renamed.
/// </summary>
public static class MetricsPlot
{
    public static void Write(string path, IReadOnlyList<IterationMetrics> history)
    {
        if (history.Count == 0) return;
        var x = history.Select(m => (double)m.Iteration).ToArray();
        var plot = new ScottPlot.Plot();
        var reward = plot.Add.Scatter(x, history.Select(m => m.RewardMean).ToArray());
        reward.LegendText = "mean reward";
        var kl = plot.Add.Scatter(x, history.Select(m => m.Kl).ToArray());
        kl.LegendText = "KL to reference";
        var throughput = plot.Add.Scatter(x, history.Select(m => m.GenerationTokensPerSecond).ToArray());
        throughput.LegendText = "generation tokens/s (right axis)";
        throughput.Axes.YAxis = plot.Axes.Right;
        plot.Axes.Right.Label.Text = "tokens/s";
        plot.Axes.Left.Label.Text = "reward, KL";
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
