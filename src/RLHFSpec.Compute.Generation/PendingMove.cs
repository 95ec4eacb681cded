using RLHFSpec.Compute.Model;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// A live sample taken out of its source instance's batch (<see cref="GenerationInstance.BeginMoveWithKv"/>) whose KV
/// is still held by the source's model, to be copied in by the target (<see cref="GenerationInstance.CompleteMoveWithKv"/>)
/// while the source goes on stepping; the source releases it afterwards (<see cref="GenerationInstance.ReleaseMoved"/>).
/// </summary>
public sealed record PendingMove(SampleState Sample, IKvSnapshot Snapshot, GenerationInstance Source, GenerationInstance Target);
