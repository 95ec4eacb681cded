namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>What a dispatch does to a binding; barriers are derived from it.</summary>
[Flags]
internal enum BindingAccess { Read = 1, Write = 2, ReadWrite = Read | Write }
