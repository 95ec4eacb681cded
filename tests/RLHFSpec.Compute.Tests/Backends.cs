using RLHFSpec.Compute.Engine;
using RLHFSpec.Compute.Engine.Cpu;
using RLHFSpec.Compute.Engine.Vulkan;

namespace RLHFSpec.Compute.Tests;

/// <summary>
/// Backends shared by the tests: the CPU backend and one Vulkan device (lavapipe here, a GPU where present),
/// opened once per test run. Without a Vulkan driver the Vulkan tests are ignored with the reason, unless
/// RLHFSPEC_REQUIRE_VULKAN=1 (set by .ci/run), when they fail.
/// </summary>
public static class Backends
{
    private static readonly Lazy<CpuBackend> CpuLazy = new(() => new CpuBackend());
    private static readonly Lazy<(VulkanBackend? Backend, string? Error)> VulkanLazy = new(OpenVulkan);

    public static CpuBackend Cpu => CpuLazy.Value;

    /// <summary>The Vulkan backend, or the test is ignored (failed when Vulkan is required).</summary>
    public static VulkanBackend Vulkan
    {
        get
        {
            var (backend, error) = VulkanLazy.Value;
            if (backend != null) return backend;
            if (Environment.GetEnvironmentVariable("RLHFSPEC_REQUIRE_VULKAN") == "1")
                Assert.Fail($"Vulkan is required (RLHFSPEC_REQUIRE_VULKAN=1) but unavailable: {error}");
            Assert.Ignore($"no Vulkan device: {error}");
            throw new InvalidOperationException("unreachable");
        }
    }

    /// <summary>Backend by name, for [TestCase("cpu")] / [TestCase("vulkan")] tests.</summary>
    public static ComputeBackend Get(string name) => name switch
    {
        "cpu" => Cpu,
        "vulkan" => Vulkan,
        _ => throw new ArgumentException(name),
    };

    /// <summary>A Vulkan backend of its own on the preferred device (the caller disposes it), or the test is ignored like <see cref="Vulkan"/>.</summary>
    public static VulkanBackend OpenOwnVulkan()
    {
        _ = Vulkan;
        return Devices.OpenVulkan(PreferredVulkanIndex());
    }

    private static (VulkanBackend?, string?) OpenVulkan()
    {
        try
        {
            var backend = Devices.OpenVulkan(PreferredVulkanIndex());
            AppDomain.CurrentDomain.ProcessExit += (_, _) => backend.Dispose();
            return (backend, null);
        }
        catch (ComputeException e) { return (null, e.Message); }
    }

    private static int PreferredVulkanIndex()
    {
        var all = Devices.ListVulkan(out _);
        int gpu = all.ToList().FindIndex(d => d.IsGpu);
        return gpu >= 0 ? gpu : 0;
    }
}
