using Silk.NET.Core.Native;
using Silk.NET.Vulkan;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>
/// A device's compute pipelines, created lazily and cached by (shader, specialization constants) — a
/// <see cref="PipelineKey"/> — with the shader modules and descriptor-set layouts they are built from. Not
/// thread-safe: the device calls it under its lock.
/// </summary>
internal sealed unsafe class PipelineCache(Vk vk, Device device) : IDisposable
{
    private readonly Dictionary<PipelineKey, CachedPipeline> _pipelines = new();
    private readonly Dictionary<string, ShaderModule> _modules = new();
    private readonly Dictionary<int, DescriptorSetLayout> _setLayouts = new();

    /// <summary>Pipelines created so far.</summary>
    public int Count => _pipelines.Count;

    /// <summary>
    /// The pipeline of <paramref name="spec"/> with <paramref name="constants"/> (constant_id i = constants[i]),
    /// created on first use. A shader declared twice with different layouts is an error.
    /// </summary>
    public CachedPipeline Get(ShaderSpec spec, ReadOnlySpan<int> constants)
    {
        var key = new PipelineKey(spec.Name, constants);
        if (_pipelines.TryGetValue(key, out var cached))
        {
            if (cached.Spec != spec) throw new ComputeException($"shader '{spec.Name}' declared twice with different layouts: {cached.Spec} vs {spec}");
            return cached;
        }
        var created = Create(spec, constants);
        _pipelines[key] = created;
        return created;
    }

    private CachedPipeline Create(ShaderSpec spec, ReadOnlySpan<int> constants)
    {
        var module = Module(spec.Name);
        var setLayout = SetLayout(spec.Bindings);
        var range = new PushConstantRange { StageFlags = ShaderStageFlags.ComputeBit, Offset = 0, Size = (uint)spec.PushConstantBytes };
        var layoutInfo = new PipelineLayoutCreateInfo
        {
            SType = StructureType.PipelineLayoutCreateInfo,
            SetLayoutCount = 1,
            PSetLayouts = &setLayout,
            PushConstantRangeCount = spec.PushConstantBytes > 0 ? 1u : 0u,
            PPushConstantRanges = &range,
        };
        vk.CreatePipelineLayout(device, &layoutInfo, null, out var layout).Check($"vkCreatePipelineLayout({spec.Name})");
        var entries = stackalloc SpecializationMapEntry[Math.Max(1, constants.Length)];
        var data = stackalloc int[Math.Max(1, constants.Length)];
        for (int i = 0; i < constants.Length; i++)
        {
            entries[i] = new SpecializationMapEntry((uint)i, (uint)(i * 4), 4);
            data[i] = constants[i];
        }
        var specialization = new SpecializationInfo
        {
            MapEntryCount = (uint)constants.Length,
            PMapEntries = entries,
            DataSize = (nuint)(constants.Length * 4),
            PData = data,
        };
        var entryName = (byte*)SilkMarshal.StringToPtr("main");
        try
        {
            var stage = new PipelineShaderStageCreateInfo
            {
                SType = StructureType.PipelineShaderStageCreateInfo,
                Stage = ShaderStageFlags.ComputeBit,
                Module = module,
                PName = entryName,
                PSpecializationInfo = constants.Length > 0 ? &specialization : null,
            };
            var pipelineInfo = new ComputePipelineCreateInfo
            {
                SType = StructureType.ComputePipelineCreateInfo,
                Stage = stage,
                Layout = layout,
            };
            vk.CreateComputePipelines(device, default, 1, &pipelineInfo, null, out var pipeline).Check($"vkCreateComputePipelines({spec.Name})");
            return new CachedPipeline(pipeline, layout, setLayout, spec);
        }
        finally { SilkMarshal.Free((nint)entryName); }
    }

    private ShaderModule Module(string name)
    {
        if (_modules.TryGetValue(name, out var module)) return module;
        var code = ShaderLibrary.Load(name);
        fixed (byte* p = code)
        {
            var info = new ShaderModuleCreateInfo { SType = StructureType.ShaderModuleCreateInfo, CodeSize = (nuint)code.Length, PCode = (uint*)p };
            vk.CreateShaderModule(device, &info, null, out module).Check($"vkCreateShaderModule({name})");
        }
        _modules[name] = module;
        return module;
    }

    /// <summary>The layout of a set of <paramref name="bindings"/> storage buffers (bindings 0..n−1), shared by every shader with as many.</summary>
    private DescriptorSetLayout SetLayout(int bindings)
    {
        if (_setLayouts.TryGetValue(bindings, out var layout)) return layout;
        var entries = stackalloc DescriptorSetLayoutBinding[bindings];
        for (int i = 0; i < bindings; i++)
            entries[i] = new DescriptorSetLayoutBinding((uint)i, DescriptorType.StorageBuffer, 1, ShaderStageFlags.ComputeBit);
        var info = new DescriptorSetLayoutCreateInfo { SType = StructureType.DescriptorSetLayoutCreateInfo, BindingCount = (uint)bindings, PBindings = entries };
        vk.CreateDescriptorSetLayout(device, &info, null, out layout).Check("vkCreateDescriptorSetLayout");
        _setLayouts[bindings] = layout;
        return layout;
    }

    /// <summary>Destroys every pipeline, layout and module (the device must be idle).</summary>
    public void Dispose()
    {
        foreach (var p in _pipelines.Values)
        {
            vk.DestroyPipeline(device, p.Pipeline, null);
            vk.DestroyPipelineLayout(device, p.Layout, null);
        }
        foreach (var m in _modules.Values) vk.DestroyShaderModule(device, m, null);
        foreach (var l in _setLayouts.Values) vk.DestroyDescriptorSetLayout(device, l, null);
        _pipelines.Clear();
        _modules.Clear();
        _setLayouts.Clear();
    }
}
