namespace RLHFSpec.Compute.Model.Formats;

/// <summary>What a path names: nothing, a regular file, a folder, or something else (a device, FIFO or socket).</summary>
public enum FileKind
{
    Missing,
    Regular,
    Directory,
    Special,
}
