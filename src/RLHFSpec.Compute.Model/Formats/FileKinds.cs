using System.Runtime.InteropServices;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>
/// The kind of a path after following symlinks. .NET reports devices and FIFOs as ordinary files, so on Unix this
/// asks <c>stat</c> through the runtime's own native shim (libSystem.Native, shipped with every .NET runtime); its
/// status struct begins with the flags and the mode, the only fields read here.
/// </summary>
public static partial class FileKinds
{
    private const int TypeMask = 0xF000, RegularType = 0x8000, DirectoryType = 0x4000;

    public static FileKind Of(string path)
    {
        if (Directory.Exists(path)) return FileKind.Directory;
        if (!File.Exists(path)) return FileKind.Missing;
        if (OperatingSystem.IsWindows()) return FileKind.Regular;
        try
        {
            if (Stat(path, out var status) != 0) return FileKind.Regular;
            return (status.Mode & TypeMask) switch
            {
                RegularType => FileKind.Regular,
                DirectoryType => FileKind.Directory,
                _ => FileKind.Special,
            };
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return FileKind.Regular;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct FileStatus
    {
        public int Flags;
        public int Mode;
        public fixed byte Rest[512]; // the rest of the runtime's FileStatus (sizes, times, ids), more than it needs
    }

    [LibraryImport("libSystem.Native", EntryPoint = "SystemNative_Stat", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Stat(string path, out FileStatus status);
}
