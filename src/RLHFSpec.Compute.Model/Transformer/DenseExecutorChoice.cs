using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Model.Onnx;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>The executor a model's dense layers run on, and why (printed by the CLI).</summary>
/// <param name="Kind">Never <see cref="DenseExecutorKind.Auto"/>.</param>
public readonly record struct DenseExecutorChoice(DenseExecutorKind Kind, string Reason)
{
    /// <summary>
    /// Resolves <paramref name="requested"/> for a model generating on a device of <paramref name="deviceKind"/> and
    /// <paramref name="deviceType"/> (the type the device reports, never its vendor or name). An explicit choice stands.
    /// <see cref="DenseExecutorKind.Auto"/> picks <see cref="DenseExecutorKind.Vulkan"/> on a Vulkan device that reports
    /// itself a discrete or integrated GPU (the whole forward then stays on it); elsewhere — the CPU backend, a software
    /// Vulkan driver such as lavapipe (where the shaders are several times slower than the CPU executors), a virtual or
    /// other device — the managed SIMD kernels when ONNX Runtime's provider is the CPU, else ONNX Runtime.
    /// </summary>
    public static DenseExecutorChoice Resolve(DenseExecutorKind requested, ExecutionProvider provider, DeviceKind deviceKind, DeviceType deviceType)
    {
        if (requested != DenseExecutorKind.Auto) return new(requested, "--dense " + Name(requested));
        if (deviceKind == DeviceKind.Vulkan && deviceType is DeviceType.DiscreteGpu or DeviceType.IntegratedGpu)
            return new(DenseExecutorKind.Vulkan, $"auto: the Vulkan device is a {deviceType.Name()}");
        string where = deviceKind == DeviceKind.Vulkan ? $"the Vulkan device reports type {deviceType.Name()}, not a discrete or integrated GPU" : "generation runs on the CPU backend";
        return provider == ExecutionProvider.Cpu
            ? new(DenseExecutorKind.Managed, $"auto: {where}, ONNX Runtime provider cpu")
            : new(DenseExecutorKind.Onnx, $"auto: {where}, ONNX Runtime provider {provider.ToString().ToLowerInvariant()}");
    }

    /// <summary>The executor's name as <c>--dense</c> spells it.</summary>
    public static string Name(DenseExecutorKind kind) => kind.ToString().ToLowerInvariant();

    public override string ToString() => $"{Name(Kind)} ({Reason})";
}
