using System.CommandLine;

namespace RLHFSpec.Compute.Cli;

/// <summary>Options several verbs share, declared once so their names, defaults and help agree.</summary>
internal static class CommonOptions
{
    public static Option<string?> Model() => new("--model") { Description = "Policy model folder (HF layout); default: the embedded policy" };

    /// <summary>
    /// <c>--set NAME</c>, also spelled <c>--model-set NAME</c>: the named model set in place of <c>--model</c>. <c>train</c>
    /// takes only <c>--model-set</c> (its config key <c>model_set</c>), since its <c>--set</c> is KEY=VALUE.
    /// </summary>
    public static Option<string?> Set() => new(SetOption, ModelSetOption)
    {
        Description = $"Model set in place of --model: {string.Join(" | ", RLHFSpec.Compute.Model.Pretraining.DefaultModels.SetNames)} (medium: the bandwidth-bound set, made by pretrain --set {RLHFSpec.Compute.Model.Pretraining.Pretrainer.MediumSetName}); --draft still picks another draft",
    };

    public const string SetOption = "--set", ModelSetOption = "--model-set";

    public static Option<string?> Draft() => new("--draft") { Description = "Draft model folder (HF layout, same tokenizer), or none for no draft model; default: the embedded small draft when the policy is the default one" };

    public static Option<string> Device() => new("--device") { Description = "auto | cpu | vulkan | vulkan:N", DefaultValueFactory = _ => "auto" };

    public static Option<string> Ep() => new("--ep") { Description = "ONNX Runtime execution provider: cpu | cuda | dml", DefaultValueFactory = _ => "cpu" };

    public static Option<int> Threads() => new("--threads") { Description = "ONNX Runtime intra-op threads (0 = one per core)", DefaultValueFactory = _ => 0 };

    public static Option<string> Dense() => new("--dense")
    {
        Description = "What runs the dense layers: auto (vulkan on a Vulkan device that reports a discrete or integrated GPU; else the managed SIMD kernels with --ep cpu, else ONNX Runtime) | onnx | managed | vulkan (compute shaders on --device vulkan: the whole forward on the device)",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>The executor named by <c>--dense</c>; a user error naming the option otherwise.</summary>
    public static RLHFSpec.Compute.Model.Transformer.DenseExecutorKind ParseDense(string value, string option = "--dense") => value.Trim().ToLowerInvariant() switch
    {
        "auto" => RLHFSpec.Compute.Model.Transformer.DenseExecutorKind.Auto,
        "onnx" => RLHFSpec.Compute.Model.Transformer.DenseExecutorKind.Onnx,
        "managed" => RLHFSpec.Compute.Model.Transformer.DenseExecutorKind.Managed,
        "vulkan" => RLHFSpec.Compute.Model.Transformer.DenseExecutorKind.Vulkan,
        _ => throw new ArgumentException($"{option} '{value}': not one of auto, onnx, managed, vulkan"),
    };

    public static Option<string> KvDType() => new("--kv-dtype")
    {
        Description = "Element type of the KV cache: f32 (exact) | f16 (half the bytes attention reads; K/V rounded to half precision)",
        DefaultValueFactory = _ => "f32",
    };

    /// <summary>The KV cache element type named by <c>--kv-dtype</c>; a user error naming the option otherwise.</summary>
    public static RLHFSpec.Compute.Engine.Kernels.KvDType ParseKvDType(string value, string option = "--kv-dtype") => value.Trim().ToLowerInvariant() switch
    {
        "f32" => RLHFSpec.Compute.Engine.Kernels.KvDType.F32,
        "f16" => RLHFSpec.Compute.Engine.Kernels.KvDType.F16,
        _ => throw new ArgumentException($"{option} '{value}': not one of f32, f16"),
    };

    public static Option<string?> Markdown() => new("--markdown") { Description = "Also write the tables as Markdown to this file" };
}
