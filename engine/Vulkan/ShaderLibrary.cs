namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>SPIR-V compiled from <c>shaders/*.comp</c> by the build and embedded as <c>spirv/NAME.spv</c>.</summary>
internal static class ShaderLibrary
{
    public static byte[] Load(string name)
    {
        var assembly = typeof(ShaderLibrary).Assembly;
        using var stream = assembly.GetManifestResourceStream($"spirv/{name}.spv")
            ?? throw new ComputeException($"shader '{name}' is not embedded (expected shaders/{name}.comp to be compiled by the build)");
        var code = new byte[stream.Length];
        stream.ReadExactly(code);
        return code;
    }

    public static IEnumerable<string> Names =>
        typeof(ShaderLibrary).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith("spirv/", StringComparison.Ordinal) && n.EndsWith(".spv", StringComparison.Ordinal))
            .Select(n => n["spirv/".Length..^".spv".Length]);
}
