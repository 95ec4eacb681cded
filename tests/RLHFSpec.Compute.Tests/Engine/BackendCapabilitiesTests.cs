using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Tests.Engine;

/// <summary>What each backend says it can do, and that host spans exist exactly where it says its buffers are host memory.</summary>
public class BackendCapabilitiesTests
{
    [TestCase("cpu", true, true)]
    [TestCase("vulkan", false, false)]
    public void EachBackendStatesItsCapabilities(string name, bool hostAddressable, bool concurrentKernels)
    {
        var backend = Backends.Get(name);
        Assert.That(backend.Capabilities, Is.EqualTo(new BackendCapabilities(hostAddressable, concurrentKernels)));
        using var buffer = backend.Allocate<uint>(8, "capabilities");
        buffer.Write(new uint[] { 1, 2, 3, 4, 5, 6, 7, 8 });
        if (hostAddressable)
        {
            var span = buffer.HostSpan(2, 3);
            Assert.That(span.ToArray(), Is.EqualTo(new uint[] { 3, 4, 5 }));
            span[0] = 30;
            Assert.That(buffer.ToArray()[2], Is.EqualTo(30u), "the span is the buffer itself");
        }
        else Assert.Throws<NotSupportedException>(() => buffer.HostSpan(2, 3));
    }
}
