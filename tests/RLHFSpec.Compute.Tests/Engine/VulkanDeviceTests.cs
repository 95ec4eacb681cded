using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Tests.Engine;

public class VulkanDeviceTests
{
    [Test]
    public void ReadsLimitsAtStartUp()
    {
        var info = Backends.Vulkan.Info;
        Assert.That(info.Kind, Is.EqualTo(DeviceKind.Vulkan));
        Assert.That(info.Limits.SubgroupSize, Is.GreaterThanOrEqualTo(1));
        Assert.That(info.Limits.MaxStorageBufferRange, Is.GreaterThan(0));
        Assert.That(info.Limits.MaxSharedMemoryBytes, Is.GreaterThanOrEqualTo(16384));
        Assert.That(info.Id, Does.StartWith("vulkan:"));
    }

    [TestCase(1, false)]
    [TestCase(1000, false)]
    [TestCase(123457, false)]
    [TestCase(123457, true)]
    public void CopyShaderCopiesWords(int count, bool transfer)
    {
        var vk = Backends.Vulkan;
        var rng = new System.Random(count);
        var data = new uint[count + 7];
        for (int i = 0; i < data.Length; i++) data[i] = (uint)rng.Next();
        using var src = vk.Allocate<uint>(data.Length, "src");
        using var dst = vk.Allocate<uint>(data.Length + 3, "dst");
        src.Write(data);
        // Offsets that are not multiples of the binding alignment exercise the element shift.
        vk.CopyWords(src, 5, dst, 3, count, transfer);
        var back = dst.ToArray();
        Assert.That(back[3..(3 + count)], Is.EqualTo(data[5..(5 + count)]));
        Assert.That(back[..3], Is.All.EqualTo(0u));
    }

    [Test]
    public void ManyDispatchesOneSubmitAndBarriersOnlyOnHazards()
    {
        var vk = Backends.Vulkan;
        using var a = vk.Allocate<uint>(1024, "a");
        using var b = vk.Allocate<uint>(1024, "b");
        using var c = vk.Allocate<uint>(1024, "c");
        using var d = vk.Allocate<uint>(1024, "d");
        a.Write(Enumerable.Range(0, 1024).Select(i => (uint)i).ToArray());
        long submits = vk.Submits, barriers = vk.Barriers;
        vk.CopyWords(a, 0, b, 0, 1024);   // reads a, writes b
        vk.CopyWords(a, 0, c, 0, 1024);   // independent: no barrier
        vk.CopyWords(b, 0, d, 0, 1024);   // reads b after a write: one barrier
        Assert.That(vk.Barriers - barriers, Is.EqualTo(1));
        Assert.That(d.ToArray(), Is.EqualTo(a.ToArray()));
        Assert.That(vk.Submits - submits, Is.EqualTo(1));
    }

    /// <summary>
    /// A submit of more dispatches than one descriptor pool holds takes further pools, and the cached pipeline serves
    /// them all: one pipeline per (shader, specialization constants), created on first use only.
    /// </summary>
    [Test]
    public void DispatchesBeyondOnePoolReuseOnePipeline()
    {
        var vk = Backends.Vulkan;
        using var a = vk.Allocate<uint>(64, "a");
        using var b = vk.Allocate<uint>(64, "b");
        a.Write(Enumerable.Range(0, 64).Select(i => (uint)i * 3).ToArray());
        vk.CopyWords(a, 0, b, 0, 64);
        vk.Flush();
        int pipelines = vk.Device.Pipelines;
        long submits = vk.Submits;
        int dispatches = 2 * DescriptorAllocator.SetsPerPool + 77;
        for (int i = 0; i < dispatches; i++) vk.CopyWords(i % 2 == 0 ? a : b, 0, i % 2 == 0 ? b : a, 0, 64);
        Assert.That(b.ToArray(), Is.EqualTo(a.ToArray()));
        Assert.That(vk.Submits - submits, Is.EqualTo(1), "one submit");
        Assert.That(vk.Device.Pipelines, Is.EqualTo(pipelines), "no pipeline created for repeated dispatches");
    }

    [Test]
    public void PipelineKeysCompareShaderAndConstantsByValue()
    {
        var key = new PipelineKey("kv_move", [64, 1, 1, 3, 0, 8, 0]);
        Assert.That(key, Is.EqualTo(new PipelineKey(new string("kv_move".ToCharArray()), [64, 1, 1, 3, 0, 8, 0])));
        Assert.That(key.GetHashCode(), Is.EqualTo(new PipelineKey("kv_move", [64, 1, 1, 3, 0, 8, 0]).GetHashCode()));
        Assert.That(key, Is.Not.EqualTo(new PipelineKey("kv_move", [64, 1, 1, 3, 0, 8, 1])));
        Assert.That(key, Is.Not.EqualTo(new PipelineKey("kv_move", [64, 1, 1, 3, 0, 8])), "a missing constant is not a zero");
        Assert.That(key, Is.Not.EqualTo(new PipelineKey("copy", [64, 1, 1, 3, 0, 8, 0])));
        Assert.That(new PipelineKey("copy", []), Is.EqualTo(new PipelineKey("copy", ReadOnlySpan<int>.Empty)));
        Assert.That(key.ToString(), Is.EqualTo("kv_move[64,1,1,3,0,8,0]"));
        Assert.Throws<ComputeException>(() => new PipelineKey("x", new int[PipelineKey.MaxConstants + 1]));
    }

    [Test]
    public void BufferOfAnotherBackendIsRejectedByName()
    {
        using var cpuBuffer = Backends.Cpu.Allocate<uint>(4, "host-only");
        using var dst = Backends.Vulkan.Allocate<uint>(4, "dst");
        var e = Assert.Throws<ArgumentException>(() => Backends.Vulkan.CopyWords(cpuBuffer, 0, dst, 0, 4));
        Assert.That(e!.ParamName, Is.EqualTo("source"));
        Assert.That(e.Message, Does.Contain("host-only"));
    }

    [Test]
    public void UnknownSelectorIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => Devices.Open("tpu"));
        Assert.That(e!.Message, Does.Contain("auto, cpu, vulkan or vulkan:N"));
        var missing = Assert.Throws<ComputeException>(() => Devices.Open("vulkan:99"));
        Assert.That(missing!.Message, Does.Contain("vulkan:99"));
    }

    [Test]
    public void AutoFallsBackToCpuWithoutGpu()
    {
        using var backend = Devices.Open("auto");
        bool anyGpu = Devices.ListVulkan(out _).Any(d => d.IsGpu);
        Assert.That(backend.Info.Kind, Is.EqualTo(anyGpu ? DeviceKind.Vulkan : DeviceKind.Cpu));
    }

    [Test]
    public void ClusterInstancesGetOneGpuEachWhereThereAreSeveral()
    {
        var limits = Backends.Cpu.Info.Limits;
        DeviceInfo Device(int i, DeviceType type) => new($"vulkan:{i}", $"device {i}", DeviceKind.Vulkan, type, "test", limits);
        var mixed = new[] { Device(0, DeviceType.Cpu), Device(1, DeviceType.DiscreteGpu), Device(2, DeviceType.IntegratedGpu), Device(3, DeviceType.DiscreteGpu) };
        Assert.That(Enumerable.Range(0, 7).Select(k => Devices.GpuForInstance(mixed, k)), Is.EqualTo(new int?[] { 1, 2, 3, 1, 2, 3, 1 }), "round robin over the GPUs, skipping lavapipe");
        Assert.That(Devices.GpuForInstance(new[] { Device(0, DeviceType.Cpu), Device(1, DeviceType.DiscreteGpu) }, 3), Is.Null, "one GPU: what Open gives");
        Assert.That(Devices.GpuForInstance(Array.Empty<DeviceInfo>(), 0), Is.Null);

        using var a = Devices.OpenForInstance("cpu", 0);
        using var b = Devices.OpenForInstance("cpu", 1);
        Assert.That(a.Info.Kind, Is.EqualTo(DeviceKind.Cpu));
        Assert.That(b, Is.Not.SameAs(a), "a backend of its own per instance");
    }
}
