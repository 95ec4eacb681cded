using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace RLHFSpec.Compute.Model.Formats;

/// <summary>Converts between float and the little-endian element encodings of safetensors. F16 uses System.Half
/// (IEEE round-to-nearest-even); BF16 keeps the top 16 bits of the float, rounded to nearest even by bit arithmetic,
/// the same as PyTorch's <c>tensor.to(torch.bfloat16)</c>.</summary>
internal static class FloatCodec
{
    /// <summary>Rounds a float to bfloat16 bits: round to nearest, ties to even; NaN stays a (quiet) NaN.</summary>
    public static ushort ToBFloat16Bits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        uint rounding = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + rounding) >> 16);
    }

    public static float FromBFloat16Bits(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Decodes <paramref name="source"/> (exactly destination.Length elements of <paramref name="dtype"/>).</summary>
    public static void Decode(ReadOnlySpan<byte> source, TensorDType dtype, Span<float> destination)
    {
        switch (dtype)
        {
            case TensorDType.F32:
                if (BitConverter.IsLittleEndian) MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                else for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source[(4 * i)..]);
                break;
            case TensorDType.F16:
                for (int i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(source[(2 * i)..]);
                break;
            case TensorDType.BF16:
                for (int i = 0; i < destination.Length; i++) destination[i] = FromBFloat16Bits(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                break;
            case TensorDType.F64:
                for (int i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(source[(8 * i)..]);
                break;
            case TensorDType.I64:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt64LittleEndian(source[(8 * i)..]);
                break;
            case TensorDType.I32:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt32LittleEndian(source[(4 * i)..]);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown tensor dtype");
        }
    }

    /// <summary>Encodes floats as <paramref name="dtype"/> (F32, F16 or BF16) into destination.</summary>
    public static void Encode(ReadOnlySpan<float> source, TensorDType dtype, Span<byte> destination)
    {
        switch (dtype)
        {
            case TensorDType.F32:
                if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(source).CopyTo(destination);
                else for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(destination[(4 * i)..], source[i]);
                break;
            case TensorDType.F16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(destination[(2 * i)..], (Half)source[i]);
                break;
            case TensorDType.BF16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], ToBFloat16Bits(source[i]));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "the writer produces only F32, F16 and BF16");
        }
    }
}
