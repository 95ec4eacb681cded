using Silk.NET.Vulkan;

namespace RLHFSpec.Compute.Engine.Vulkan;

/// <summary>A pipeline of the <see cref="PipelineCache"/>: the pipeline, its layout, its descriptor-set layout and the shader it was built for.</summary>
internal readonly record struct CachedPipeline(Pipeline Pipeline, PipelineLayout Layout, DescriptorSetLayout SetLayout, ShaderSpec Spec);
