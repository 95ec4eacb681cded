using RLHFSpec.Compute.Generation.Cluster;
using RLHFSpec.Compute.Generation.Selection;
using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation.Simulation;

/// <summary>
/// Checks the <see cref="ClusterSimulator"/> against real cluster runs: the workload is generated for real on N
/// instances with static assignment and with reallocation; each run's response lengths, the cost profile the
/// instances used, the instance count, batch limit, initial assignment (a fresh <see cref="LengthPredictor"/>'s
/// predictions, as the run's own) and, for the reallocated side, the copy rate the run measured then drive the
/// simulator, and the predicted completion time is set beside the measured one. A warm-up, when given, also
/// measures what the profile does not time (a step's overhead outside the forwards, prefill per prompt token) for
/// the simulator.
/// </summary>
public static class SimulatorValidation
{
    /// <param name="generator">Generates the workload; its cost model (profiled now when none is loaded) drives both the real instances and the simulator.</param>
    /// <param name="models">Instance k's models, as for <see cref="Generator.RunCluster"/>.</param>
    /// <param name="options">Cluster options; <see cref="ClusterOptions.Reallocate"/> is set per side.</param>
    /// <param name="simulation">What the simulator cannot learn from the runs: <see cref="SimulationOptions.KvBytesPerToken"/>, the assumed copy rate and latency.</param>
    /// <param name="warmUp">Requests generated twice on the cluster before the measured runs (session and JIT warm-up; the second run measures the step overhead and prefill rate), or none.</param>
    /// <param name="repeats">Real runs per side, in alternating order; the fastest of each side is checked.</param>
    public static IReadOnlyList<SimulatorCheck> Run(Generator generator, IReadOnlyList<GenerationRequest> requests, int instances,
        Func<int, (ITargetModel Policy, ITargetModel? Draft)> models, ClusterOptions options, SimulationOptions simulation,
        IReadOnlyList<GenerationRequest>? warmUp = null, int repeats = 1)
    {
        if (repeats < 1) throw new ArgumentOutOfRangeException(nameof(repeats), repeats, "must be >= 1");
        ArgumentNullException.ThrowIfNull(generator);
        ArgumentNullException.ThrowIfNull(requests);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(simulation);
        if (requests.Count == 0) throw new ArgumentException("requests: the workload is empty", nameof(requests));
        var cost = generator.EnsureCost();
        if (warmUp is { Count: > 0 })
        {
            // The warm-up runs twice; its second run, past the first-use costs of fresh sessions, also measures what
            // the profile does not time: a step's overhead beyond its forwards, and prefill per prompt token.
            generator.RunCluster(warmUp, instances, models, options with { Reallocate = false });
            var w = generator.RunCluster(warmUp, instances, models, options with { Reallocate = false }).Cluster!;
            double busy = w.Instances.Sum(i => i.BusySeconds), forwards = w.Total.DraftSeconds + w.Total.VerifyForwardSeconds + w.Total.PrefillSeconds;
            simulation = simulation with
            {
                StepOverheadSeconds = w.Total.Steps > 0 ? Math.Max(0, busy - forwards) / w.Total.Steps : 0,
                PrefillSecondsPerToken = w.Total.PrefillTokens > 0 ? w.Total.PrefillSeconds / w.Total.PrefillTokens : 0,
            };
        }
        // Alternating order (static, reallocated, reallocated, static, …) so that warm-up and machine noise do not
        // favour one side; the fastest run of each side is the one checked.
        var best = new Dictionary<bool, GeneratorRunResult>();
        for (int r = 0; r < repeats; r++)
            foreach (bool reallocate in r % 2 == 0 ? new[] { false, true } : [true, false])
            {
                var real = generator.RunCluster(requests, instances, models, options with { Reallocate = reallocate });
                if (!best.TryGetValue(reallocate, out var kept) || real.Cluster!.WallSeconds < kept.Cluster!.WallSeconds) best[reallocate] = real;
            }
        var checks = new List<SimulatorCheck>();
        foreach (bool reallocate in new[] { false, true })
        {
            var real = best[reallocate];
            var stats = real.Cluster!;
            var predictor = new LengthPredictor(); // what the run's fresh cluster predicted when it assigned
            var workload = requests.Select((r, i) => new SimulatedSample(r.SampleId, r.Prompt.Length, Math.Max(1, real.Results[i].Tokens.Length),
                (int)Math.Round(predictor.PredictTotal(r)))).ToArray();
            var sim = simulation with
            {
                Instances = instances,
                Reallocate = reallocate,
                MaxBatch = generator.MaxBatch,
                AssignByPredictedLength = options.Assignment == AssignmentPolicy.PredictedLength,
                DrainThreshold = options.DrainThreshold,
                RequireGain = options.RequireGain,
                Migration = options.Migration,
                MigrationBytesPerSecond = stats.CopySeconds > 0 && stats.KvBytesMoved > 0 ? stats.KvBytesMoved / stats.CopySeconds : simulation.MigrationBytesPerSecond,
            };
            var selector = new StrategySelector(cost, new AcceptanceEstimator(), generator.StepStrategies);
            var predicted = new ClusterSimulator(cost, selector).Run(workload, sim);
            checks.Add(new SimulatorCheck(reallocate ? "reallocated" : "static", stats.WallSeconds, predicted.CompletionSeconds,
                stats.Migrations + stats.Recomputes, predicted.Migrations + predicted.Recomputes)
            {
                MeasuredBusySeconds = stats.Instances.Sum(i => i.BusySeconds),
                PredictedBusySeconds = predicted.InstanceBusySeconds.Sum(),
                MeasuredForwardSeconds = stats.Total.DraftSeconds + stats.Total.VerifyForwardSeconds,
                MeasuredPrefillSeconds = stats.Total.PrefillSeconds,
                MeasuredSteps = stats.Total.Steps,
                PredictedSteps = predicted.Steps,
                MeasuredTokensPerSampleStep = stats.Total.MeanEmittedPerSampleStep,
                PredictedTokensPerSampleStep = predicted.SampleSteps == 0 ? 0 : predicted.Tokens / (double)predicted.SampleSteps,
            });
        }
        return checks;
    }
}
