using System.CommandLine;
using System.Globalization;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Cli.Commands;

/// <summary>
/// <c>rlhfspec export --format gguf [--dtype f32|f16] --model DIR --out FILE.gguf</c>: a Llama or Qwen2 checkpoint as
/// one GGUF file for llama.cpp (see <see cref="GgufExporter"/>), written to a temporary name and renamed.
/// </summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var format = new Option<string>("--format") { Description = "Output format: gguf", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Weight type: f32 | f16 (2-D weights; norms and biases stay f32)", DefaultValueFactory = _ => "f32" };
        var model = CommonOptions.Model();
        var output = new Option<string>("--out") { Description = "Output file (.gguf)", Required = true };
        var command = new Command("export", "Export a checkpoint for another runtime (GGUF for llama.cpp)") { format, dtype, model, output };
        command.SetAction(r => Run(r.GetValue(format)!, r.GetValue(dtype)!, r.GetValue(model), r.GetValue(output)!));
        return command;
    }

    private static int Run(string format, string dtypeName, string? model, string output)
    {
        if (!format.Equals("gguf", StringComparison.OrdinalIgnoreCase)) throw new ArgumentException($"--format: '{format}' is not supported (gguf)");
        var dtype = ParseDType(dtypeName);
        CheckOutput(output);
        var (policy, _) = ModelFolders.Resolve(model, null, draftOptional: true);
        var summary = GgufExporter.Export(policy, output, dtype);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"export: {summary.Path}: GGUF v{GgufWriter.Version}, architecture {summary.Architecture}, {summary.Tensors} tensors ({summary.DType.ToTorchName()}), vocabulary {summary.VocabularySize} (pre-tokenizer {summary.PreTokenizer}), {summary.Bytes / 1e6:F1} MB"));
        return 0;
    }

    internal static TensorDType ParseDType(string name) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" => TensorDType.F32,
        "f16" or "float16" => TensorDType.F16,
        _ => throw new ArgumentException($"--dtype: '{name}' is not supported (f32, f16)"),
    };

    internal static void CheckOutput(string output)
    {
        if (string.IsNullOrWhiteSpace(output)) throw new ArgumentException("--out: empty path");
        if (Directory.Exists(output)) throw new ArgumentException($"--out '{output}': is a folder, not a file");
    }
}
