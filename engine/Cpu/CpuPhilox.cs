using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// <see cref="Philox.Uniform"/> for a run of consecutive indices, eight counters per AVX2 instruction (the 32 × 32 → 64
/// products by vpmuludq on the even and odd lanes); bit-identical to the scalar generator, which it falls back to
/// without AVX2. The exponential race draws one uniform per vocabulary entry, so this is its inner loop.
/// </summary>
internal static class CpuPhilox
{
    private const uint M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    private const uint W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

    /// <summary>destination[j] = Philox.Uniform(seed, position, sampleId, stream, firstIndex + j).</summary>
    public static void Uniforms(in Kernels.SamplingParams p, int position, uint stream, uint firstIndex, Span<float> destination)
    {
        int j = 0;
        if (Avx2.IsSupported)
        {
            var lane = Vector256.Create(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u);
            var c0 = Vector256.Create((uint)position);
            var c1 = Vector256.Create(p.SampleId);
            var c2 = Vector256.Create(stream);
            for (; j <= destination.Length - 8; j += 8)
            {
                var x = Next8(c0, c1, c2, Vector256.Create(firstIndex + (uint)j) + lane, p.SeedLo, p.SeedHi);
                ToUniform(x).CopyTo(destination.Slice(j, 8));
            }
        }
        for (; j < destination.Length; j++)
            destination[j] = Philox.Uniform(p.SeedLo, p.SeedHi, position, p.SampleId, stream, firstIndex + (uint)j);
    }

    /// <summary>Philox-4x32-10's first output word for eight counters (c0..c3 per lane) under key (k0, k1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Next8(Vector256<uint> c0, Vector256<uint> c1, Vector256<uint> c2, Vector256<uint> c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            var (hi0, lo0) = MulHiLo(c0, M0);
            var (hi1, lo1) = MulHiLo(c2, M1);
            c0 = hi1 ^ c1 ^ Vector256.Create(k0);
            c1 = lo1;
            c2 = hi0 ^ c3 ^ Vector256.Create(k1);
            c3 = lo0;
            k0 += W0;
            k1 += W1;
        }
        return c0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<uint> Hi, Vector256<uint> Lo) MulHiLo(Vector256<uint> a, uint multiplier)
    {
        var m = Vector256.Create(multiplier);
        var even = Avx2.Multiply(a, m);                                                  // lanes 0, 2, 4, 6 as 64-bit products
        var odd = Avx2.Multiply(Avx2.ShiftRightLogical(a.AsUInt64(), 32).AsUInt32(), m); // lanes 1, 3, 5, 7
        var hi = Avx2.Blend(Avx2.ShiftRightLogical(even, 32).AsUInt32(), odd.AsUInt32(), 0b1010_1010);
        return (hi, a * m);
    }

    /// <summary>(2·(x >> 9) + 1) · 2^-24, as <see cref="Philox.ToUniform"/> (the odd integer is below 2^24: exact in float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ToUniform(Vector256<uint> x)
    {
        var odd = ((x >> 9) << 1) | Vector256<uint>.One;
        return Vector256.ConvertToSingle(odd.AsInt32()) * Vector256.Create(1f / 16777216f);
    }
}
