namespace RLHFSpec.Compute.Model.Formats;

/// <summary>Names and sizes of <see cref="TensorDType"/> as the safetensors header spells them.</summary>
public static class TensorDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int SizeOf(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => 4,
        TensorDType.F16 => 2,
        TensorDType.BF16 => 2,
        TensorDType.F64 => 8,
        TensorDType.I64 => 8,
        TensorDType.I32 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown tensor dtype"),
    };

    /// <summary>The header name ("F32", "BF16", …).</summary>
    public static string ToHeaderName(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => "F32",
        TensorDType.F16 => "F16",
        TensorDType.BF16 => "BF16",
        TensorDType.F64 => "F64",
        TensorDType.I64 => "I64",
        TensorDType.I32 => "I32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown tensor dtype"),
    };

    /// <summary>Parses a header dtype name; false for names this project does not read (e.g. "U8", "F8_E4M3").</summary>
    public static bool TryParseHeaderName(string name, out TensorDType dtype)
    {
        switch (name)
        {
            case "F32": dtype = TensorDType.F32; return true;
            case "F16": dtype = TensorDType.F16; return true;
            case "BF16": dtype = TensorDType.BF16; return true;
            case "F64": dtype = TensorDType.F64; return true;
            case "I64": dtype = TensorDType.I64; return true;
            case "I32": dtype = TensorDType.I32; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>The torch_dtype spelling of config.json ("float32", "float16", "bfloat16").</summary>
    public static string ToTorchName(this TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => "float32",
        TensorDType.F16 => "float16",
        TensorDType.BF16 => "bfloat16",
        TensorDType.F64 => "float64",
        TensorDType.I64 => "int64",
        TensorDType.I32 => "int32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown tensor dtype"),
    };

    /// <summary>Parses a config.json torch_dtype ("float32", "float16"/"half", "bfloat16").</summary>
    public static bool TryParseTorchName(string name, out TensorDType dtype)
    {
        switch (name)
        {
            case "float32": case "float": dtype = TensorDType.F32; return true;
            case "float16": case "half": dtype = TensorDType.F16; return true;
            case "bfloat16": dtype = TensorDType.BF16; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Whether the writer can produce this dtype (floating types converted from float).</summary>
    public static bool IsWritable(this TensorDType dtype) => dtype is TensorDType.F32 or TensorDType.F16 or TensorDType.BF16;
}
