namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>Where an <see cref="InstanceWorker"/> is: between steps, stepping (its instance is its thread's alone), or out of the cluster.</summary>
internal enum InstanceWorkerState { Ready, Stepping, Failed }
