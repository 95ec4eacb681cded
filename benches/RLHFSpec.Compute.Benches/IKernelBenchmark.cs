namespace RLHFSpec.Compute.Benches;

/// <summary>
/// A benchmark class whose cases know, from their parameters alone (no set-up run), how many bytes the kernel
/// must touch: the numerator of the GB/s column.
/// </summary>
public interface IKernelBenchmark
{
    string Backend { get; }

    /// <summary>Bytes the measured method must read plus write at the least.</summary>
    long BytesTouched(string method);
}
