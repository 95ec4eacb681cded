using System.Runtime.InteropServices;

namespace RLHFSpec.Compute.Engine.Vulkan;

public sealed partial class VulkanBackend
{
    private static readonly ShaderSpec CopyShader = new("copy", Bindings: 2, PushConstantBytes: 16);

    [StructLayout(LayoutKind.Sequential)]
    private struct CopyPush { public uint Count, SourceShift, DestinationShift, Pad; }

    /// <summary>
    /// Copies <paramref name="count"/> words with the plain copy shader (the yardstick for copy bandwidth).
    /// Recorded, not waited for. <paramref name="useTransfer"/> uses vkCmdCopyBuffer instead.
    /// </summary>
    public void CopyWords(DeviceBuffer<uint> source, long sourceOffset, DeviceBuffer<uint> destination, long destinationOffset, long count, bool useTransfer = false)
    {
        var src = Own(source, nameof(source));
        var dst = Own(destination, nameof(destination));
        if (sourceOffset < 0 || count < 0 || sourceOffset + count > src.Length) throw new ArgumentOutOfRangeException(nameof(sourceOffset), $"source range [{sourceOffset}, {sourceOffset + count}) outside '{src.Name}' ({src.Length} words)");
        if (destinationOffset < 0 || destinationOffset + count > dst.Length) throw new ArgumentOutOfRangeException(nameof(destinationOffset), $"destination range [{destinationOffset}, {destinationOffset + count}) outside '{dst.Name}' ({dst.Length} words)");
        if (useTransfer)
        {
            Device.CopyBuffer(src.Raw, sourceOffset * 4, dst.Raw, destinationOffset * 4, count * 4);
            return;
        }
        const int local = 256;
        // Bind in ranges no larger than the device allows.
        long maxWords = (Limits.MaxStorageBufferRange - Limits.MinStorageBufferOffsetAlignment) / 4;
        Span<int> constants = stackalloc int[] { local };
        for (long done = 0; done < count; done += maxWords)
        {
            long n = Math.Min(maxWords, count - done);
            var bindings = new[]
            {
                src.Bind(sourceOffset + done, n, BindingAccess.Read, out uint srcShift),
                dst.Bind(destinationOffset + done, n, BindingAccess.Write, out uint dstShift),
            };
            var push = new CopyPush { Count = (uint)n, SourceShift = srcShift, DestinationShift = dstShift };
            // The shader moves uvec4s when every offset and the count are multiples of four words.
            bool wide = ((n | srcShift | dstShift) & 3) == 0;
            uint groups = (uint)Math.Clamp(Groups(wide ? n / 4 : n, local), 1, 4096);
            Dispatch(CopyShader, bindings, push, groups, constants: constants);
        }
    }
}
