namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// What the host knows of a compute shader: its SPIR-V resource (<c>spirv/NAME.spv</c>, built from
/// <c>shaders/NAME.comp</c>), how many storage buffers it binds (set 0, bindings 0..n−1) and the size of its
/// push-constant block (mirrored by a <c>[StructLayout(Sequential)]</c> struct). Dispatch checks both.
/// </summary>
internal sealed record ShaderSpec(string Name, int Bindings, int PushConstantBytes);
