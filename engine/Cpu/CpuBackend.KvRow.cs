using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>
    /// How the attention loops read a K or V row they hold as a <c>float*</c>: fp32 elements, or fp16 bit patterns read
    /// in place. As a struct type argument it specialises the loops, so each load compiles to its own instructions.
    /// </summary>
    private unsafe interface IKvRow
    {
        /// <summary>Elements c … c + 7 of the row as floats.</summary>
        static abstract Vector256<float> Load(float* row, int c);

        /// <summary>Element c of the row as a float.</summary>
        static abstract float LoadOne(float* row, int c);

        /// <summary>The row that starts <paramref name="elements"/> elements further on.</summary>
        static abstract float* Offset(float* row, int elements);
    }

    private unsafe struct SingleRow : IKvRow
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(float* row, int c) => Vector256.Load(row + c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadOne(float* row, int c) => row[c];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float* Offset(float* row, int elements) => row + elements;
    }

    /// <summary>
    /// The pointer addresses fp16 bit patterns, none of them Inf or NaN (<see cref="AllFinite"/>); needs AVX2
    /// (<see cref="FiniteHalfToSingle8"/>).
    /// </summary>
    private unsafe struct FiniteHalfRow : IKvRow
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(float* row, int c) => FiniteHalfToSingle8((short*)row + c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadOne(float* row, int c) => (float)BitConverter.Int16BitsToHalf(((short*)row)[c]);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float* Offset(float* row, int elements) => (float*)((short*)row + elements);
    }

    /// <summary>
    /// <see cref="FiniteHalfRow"/> without its multiply: each load is 2^−112 × the half's value, exactly (a subnormal
    /// half arrives as a subnormal float), in three vector ops. Each product's other factor is 2^112 × its true value,
    /// itself exact while under 2^16 before scaling, so every product is the same real number as with the widened
    /// half and every FMA rounds alike. Finite halves only, AVX2 only, as <see cref="FiniteHalfRow"/>.
    /// </summary>
    private unsafe struct ScaledHalfRow : IKvRow
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(float* row, int c) => FiniteHalfToScaledSingle8((short*)row + c);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float LoadOne(float* row, int c) => BitConverter.Int32BitsToSingle((((short*)row)[c] << 13) & unchecked((int)0x8FFFE000));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float* Offset(float* row, int elements) => (float*)((short*)row + elements);
    }
}
