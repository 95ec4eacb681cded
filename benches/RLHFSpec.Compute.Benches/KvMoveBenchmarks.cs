using BenchmarkDotNet.Attributes;
using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Benches;

/// <summary>
/// kv_move bandwidth on the first Vulkan device against the plain copy shader (the yardstick; target: kv_move ≥ 70 %
/// of it). Every case moves the same 64 MiB: whole fp16 blocks (migration), slot rows compacted in place (commit of
/// accepted nodes), and fp32 rows appended as fp16 (reads 2 bytes per byte written).
/// Run: dotnet run -c Release --project benches/RLHFSpec.Compute.Benches -- --filter '*KvMove*'
/// </summary>
[MemoryDiagnoser]
public class KvMoveBenchmarks
{
    private const int Words = 16 << 20;            // 64 MiB
    private const int BlockWords = 16 * 8 * 128 / 2; // block of 16 slots, 8 KV heads × 128, fp16
    private const int SlotWords = 8 * 128 / 2;

    private VulkanBackend _vk = null!;
    private DeviceBuffer<uint> _a = null!, _b = null!, _cache = null!;
    private DeviceBuffer<float> _newRows = null!;
    private int[] _blocks = null!, _blockSegments = null!;
    private int[] _compactSource = null!, _compactDestination = null!, _compactSegments = null!;
    private int[] _appendSlots = null!;
    private KvLayout _layout;

    [GlobalSetup]
    public void Setup()
    {
        _vk = Devices.OpenVulkan(0);
        _a = _vk.Allocate<uint>(Words, "a");
        _b = _vk.Allocate<uint>(Words, "b");
        int blocks = Words / BlockWords;
        _blocks = Enumerable.Range(0, blocks).ToArray();
        _blockSegments = Enumerable.Range(0, blocks + 1).ToArray();

        // Compaction: 256 samples, each keeping every other one of 256 slot rows (128 moved down, in place).
        // The cache holds twice the moved rows so the bytes moved match the other cases.
        int samples = 256, rowsPerSample = Words / SlotWords / samples;
        _cache = _vk.Allocate<uint>((long)2 * Words, "cache");
        var src = new List<int>(); var dst = new List<int>(); var seg = new List<int> { 0 };
        for (int s = 0; s < samples; s++)
        {
            int first = s * 2 * rowsPerSample;
            for (int i = 0; i < rowsPerSample; i++) { src.Add(first + 2 * i + 1); dst.Add(first + i); }
            seg.Add(src.Count);
        }
        (_compactSource, _compactDestination, _compactSegments) = (src.ToArray(), dst.ToArray(), seg.ToArray());

        _layout = new KvLayout(NumBlocks: Words / BlockWords, BlockSize: 16, NumKvHeads: 8, HeadDim: 128, KvDType.F16);
        int tokens = Words / SlotWords;
        _newRows = _vk.Allocate<float>((long)tokens * _layout.RowElements, "new-rows");
        _appendSlots = Enumerable.Range(0, tokens).Reverse().ToArray();
    }

    [Benchmark(Baseline = true, Description = "copy shader, 64 MiB")]
    public void CopyShader()
    {
        _vk.CopyWords(_a, 0, _b, 0, Words);
        _vk.Flush();
    }

    [Benchmark(Description = "kv_move blocks (64 KiB rows, one segment each)")]
    public void KvMoveBlocks()
    {
        _vk.CopyKv(_a, _b, _blocks, _blocks, _blockSegments, BlockWords);
        _vk.Flush();
    }

    [Benchmark(Description = "kv_move in-place compaction (2 KiB rows, 256 segments)")]
    public void KvMoveCompaction()
    {
        _vk.CopyKv(_cache, _cache, _compactSource, _compactDestination, _compactSegments, SlotWords);
        _vk.Flush();
    }

    [Benchmark(Description = "kv_move append fp32 → fp16 (64 MiB written)")]
    public void KvMoveAppendF16()
    {
        _vk.AppendKv(_newRows, _a, _layout, _appendSlots);
        _vk.Flush();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _a.Dispose(); _b.Dispose(); _cache.Dispose(); _newRows.Dispose();
        _vk.Dispose();
    }
}
