using System.Runtime.CompilerServices;

namespace RLHFSpec.Compute.Engine.Random;

/// <summary>
/// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), the counter-based
/// generator every kernel draws from. Bit-identical to <c>philox()</c> in <c>shaders/philox.glsl</c>.
/// </summary>
public static class Philox
{
    private const uint M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    private const uint W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

    /// <summary>First output word of Philox-4x32-10 for counter (c0..c3) and key (k0, k1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Next(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            ulong p0 = (ulong)M0 * c0;
            ulong p1 = (ulong)M1 * c2;
            uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0;
            uint hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
            c0 = hi1 ^ c1 ^ k0;
            c1 = lo1;
            c2 = hi0 ^ c3 ^ k1;
            c3 = lo0;
            k0 += W0;
            k1 += W1;
        }
        return c0;
    }

    /// <summary>Uniform in the open interval (0, 1), exactly representable in float: (2·(x >> 9) + 1) · 2^-24.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToUniform(uint x) => ((x >> 9) * 2u + 1u) * (1f / 16777216f);

    /// <summary>Uniform (0, 1) draw for (position, sampleId, stream, index) under a 64-bit seed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Uniform(uint seedLo, uint seedHi, int position, uint sampleId, uint stream, uint index) =>
        ToUniform(Next((uint)position, sampleId, stream, index, seedLo, seedHi));
}
