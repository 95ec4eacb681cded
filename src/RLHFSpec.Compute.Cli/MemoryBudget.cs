using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Cli;

/// <summary>
/// What a run will reserve, compared with what the machine has, before anything is allocated: each model object
/// reserves its whole KV budget when it is made, so instances × KV budget can exceed memory long before any work.
/// </summary>
internal static class MemoryBudget
{
    /// <summary>Per model object beyond its KV cache (ONNX Runtime sessions, graphs, step buffers): an allowance.</summary>
    public const long SessionBytes = 32L << 20;

    /// <summary>The memory this process may use (the machine's, or its container's limit).</summary>
    public static long Available => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Float32 bytes of a checkpoint's tensors (read from the headers only).</summary>
    public static long WeightBytes(string folder)
    {
        using var checkpoint = Checkpoint.Load(folder);
        return checkpoint.Weights.Names.Sum(n => checkpoint.Weights.Get(n).Shape.Aggregate(4L, (a, b) => a * b));
    }

    /// <summary>Refuses, with the numbers, a run whose reservations exceed the memory available.</summary>
    public static void Require(string options, int kvCaches, long kvBudgetBytes, long otherBytes, string remedy)
    {
        long need = checked(kvCaches * (kvBudgetBytes + SessionBytes) + otherBytes);
        long have = Available;
        if (need > have)
            throw new ArgumentException($"{options}: the run would reserve about {Format.Bytes(need)} ({kvCaches} KV cache(s) × {Format.Bytes(kvBudgetBytes)} " +
                $"+ {Format.Bytes(kvCaches * SessionBytes)} sessions + {Format.Bytes(otherBytes)} weights), but {Format.Bytes(have)} is available; {remedy}");
    }
}
