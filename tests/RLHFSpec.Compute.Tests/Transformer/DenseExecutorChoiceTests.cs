using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Transformer;
using static RLHFSpec.Compute.Tests.Transformer.TransformerTestModels;

namespace RLHFSpec.Compute.Tests.Transformer;

/// <summary>
/// <c>--dense auto</c> (<see cref="DenseExecutorChoice.Resolve"/>): the Vulkan shaders on a Vulkan device that reports
/// itself a discrete or integrated GPU, today's CPU-side choice everywhere else; an explicit executor always stands.
/// </summary>
[TestFixture]
public sealed class DenseExecutorChoiceTests
{
    [TestCase(DeviceType.DiscreteGpu, ExecutionProvider.Cpu, DenseExecutorKind.Vulkan)]
    [TestCase(DeviceType.IntegratedGpu, ExecutionProvider.Cpu, DenseExecutorKind.Vulkan)]
    [TestCase(DeviceType.DiscreteGpu, ExecutionProvider.Cuda, DenseExecutorKind.Vulkan)]
    [TestCase(DeviceType.Cpu, ExecutionProvider.Cpu, DenseExecutorKind.Managed)]       // lavapipe
    [TestCase(DeviceType.Cpu, ExecutionProvider.Dml, DenseExecutorKind.Onnx)]
    [TestCase(DeviceType.VirtualGpu, ExecutionProvider.Cpu, DenseExecutorKind.Managed)]
    [TestCase(DeviceType.Other, ExecutionProvider.Cpu, DenseExecutorKind.Managed)]
    public void Auto_on_a_vulkan_device_follows_its_reported_type(DeviceType type, ExecutionProvider provider, DenseExecutorKind expected)
    {
        var choice = DenseExecutorChoice.Resolve(DenseExecutorKind.Auto, provider, DeviceKind.Vulkan, type);
        Assert.That(choice.Kind, Is.EqualTo(expected));
        Assert.That(choice.Reason, Does.StartWith("auto: ").And.Contain(type.Name()), "the reason names the reported type");
        Assert.That(choice.ToString(), Does.StartWith(DenseExecutorChoice.Name(expected) + " (auto: "));
    }

    [TestCase(ExecutionProvider.Cpu, DenseExecutorKind.Managed)]
    [TestCase(ExecutionProvider.Cuda, DenseExecutorKind.Onnx)]
    public void Auto_on_the_cpu_backend_keeps_the_cpu_executors(ExecutionProvider provider, DenseExecutorKind expected)
    {
        var choice = DenseExecutorChoice.Resolve(DenseExecutorKind.Auto, provider, DeviceKind.Cpu, DeviceType.Host);
        Assert.That(choice.Kind, Is.EqualTo(expected));
        Assert.That(choice.Reason, Does.Contain("CPU backend"));
    }

    [Test]
    public void An_explicit_executor_stands_on_every_device()
    {
        foreach (var requested in new[] { DenseExecutorKind.Onnx, DenseExecutorKind.Managed, DenseExecutorKind.Vulkan })
            foreach (var type in Enum.GetValues<DeviceType>())
                foreach (var kind in Enum.GetValues<DeviceKind>())
                {
                    var choice = DenseExecutorChoice.Resolve(requested, ExecutionProvider.Cpu, kind, type);
                    Assert.That(choice, Is.EqualTo(new DenseExecutorChoice(requested, "--dense " + DenseExecutorChoice.Name(requested))), $"{requested} on {kind} {type}");
                }
    }

    [Test]
    public void A_model_resolves_auto_from_its_own_device()
    {
        using var weights = Weights(Config("llama"), 6);
        using var onCpu = NewModel(weights, Backends.Cpu, dense: DenseExecutorKind.Auto);
        Assert.That(onCpu.DenseChoice.Kind, Is.EqualTo(DenseExecutorKind.Managed));
        var vulkan = Backends.Vulkan;
        using var onVulkan = NewModel(weights, vulkan, dense: DenseExecutorKind.Auto);
        var expected = vulkan.Info.Type is DeviceType.DiscreteGpu or DeviceType.IntegratedGpu ? DenseExecutorKind.Vulkan : DenseExecutorKind.Managed;
        Assert.That(onVulkan.DenseChoice.Kind, Is.EqualTo(expected), $"device {vulkan.Info.Name} reports {vulkan.Info.Type.Name()}");
        Assert.That(onVulkan.DenseExecutor, Does.StartWith(DenseExecutorChoice.Name(expected)));
    }
}
