namespace RLHFSpec.Compute.Generation.Cluster;

/// <summary>An overlapped move handed to a receiver, with its donor and the donor's step count when it was handed over.</summary>
internal sealed record IncomingMove(PendingMove Move, InstanceWorker From, long FromSteps);
