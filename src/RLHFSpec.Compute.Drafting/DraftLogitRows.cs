using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Drafting;

/// <summary>
/// A sampled draft's q on the device that drafted it: rows [<see cref="FirstRow"/>, <see cref="FirstRow"/> +
/// <see cref="Rows"/>) of <see cref="Buffer"/> // [*, vocab], row j the distribution node j's child was drawn from (row 0
/// at the root). Valid until the proposer's next <see cref="IProposer.Propose"/>. Verification copies the rows into
/// its own layout on the device (<see cref="ComputeBackend.CopyRows"/>), or through the host when the target runs
/// on another backend.
/// </summary>
public sealed record DraftLogitRows(ComputeBackend Backend, DeviceBuffer<float> Buffer, int FirstRow, int Rows);
