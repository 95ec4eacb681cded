using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using RLHFSpec.Compute.Engine.Kernels;
using RLHFSpec.Compute.Engine.Random;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// <see cref="Philox.Uniform"/> for runs of consecutive indices of one (seed, position, sampleId, stream), eight
/// counters per AVX2 instruction (sixteen with AVX-512); bit-identical to the scalar generator. Only the last counter word (the index)
/// varies along a run, and Philox's first rounds mix it into one half of the state at a time: round 1 needs no
/// vector product, rounds 2 and 3 one each (the other half is the same for every index and computed once here),
/// and the last round only the word it outputs: 14.5 vector products instead of 20. The exponential race draws one
/// uniform per vocabulary entry, so this is its inner loop.
/// </summary>
internal readonly struct CpuPhilox
{
    private const uint M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    private const uint W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

    private readonly uint _k0, _k1;
    private readonly uint _c2Base;          // round 1: c2 = _c2Base ^ index
    private readonly uint _r2c1, _r2c2, _r2c3; // round 2's inputs c1 and its index-free outputs c2, c3
    private readonly uint _r3c1, _r3hi1;     // round 3's index-free output c1, and the high word of its index-free product

    public CpuPhilox(in SamplingParams p, int position, uint stream)
    {
        _k0 = p.SeedLo;
        _k1 = p.SeedHi;
        // Round 1 on (position, sampleId, stream, index): c0, c1, c3 are index-free, c2 = hi(M0·position) ^ index ^ k1.
        ulong a = (ulong)M0 * (uint)position, b = (ulong)M1 * stream;
        uint c0 = (uint)(b >> 32) ^ p.SampleId ^ _k0;
        _r2c1 = (uint)b;
        _c2Base = (uint)(a >> 32) ^ _k1;
        uint c3 = (uint)a;
        // Round 2: the product of c0 is index-free, so its outputs c2 and c3 are.
        ulong d = (ulong)M0 * c0;
        _r2c2 = (uint)(d >> 32) ^ c3 ^ (_k1 + W1);
        _r2c3 = (uint)d;
        // Round 3: the product of c2 is index-free.
        ulong e = (ulong)M1 * _r2c2;
        _r3c1 = (uint)e;
        _r3hi1 = (uint)(e >> 32);
    }

    /// <summary>Whether <see cref="Uniform16"/> may be called (AVX2; else use <see cref="Philox.Uniform"/>).</summary>
    public static bool IsVectorized => Avx2.IsSupported;

    /// <summary>
    /// Lanes j of Low and High: Philox.Uniform(…, firstIndex + j) and (…, firstIndex + 8 + j). Two independent
    /// dependency chains, interleaved so that the core overlaps their multiply latencies. AVX2 only.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (Vector256<float> Low, Vector256<float> High) Uniform16(uint firstIndex)
    {
        var index = Vector256.Create(firstIndex) + Vector256.Create(0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u);
        // Round 2 (round 1 is in _c2Base): only c2 = _c2Base ^ index varies.
        var r2 = Vector256.Create(_c2Base);
        var (hiA, loA) = MulHiLo(r2 ^ index, M1);
        var (hiB, loB) = MulHiLo(r2 ^ (index + Vector256.Create(8u)), M1);
        var k = Vector256.Create(_r2c1 ^ (_k0 + W0));
        Vector256<uint> c0A = hiA ^ k, c1A = loA, c0B = hiB ^ k, c1B = loB;
        // Round 3: c0 varies, c2 does not.
        (hiA, loA) = MulHiLo(c0A, M0);
        (hiB, loB) = MulHiLo(c0B, M0);
        k = Vector256.Create(_r3hi1 ^ unchecked(_k0 + 2 * W0));
        c0A = c1A ^ k;
        c0B = c1B ^ k;
        c1A = c1B = Vector256.Create(_r3c1);
        k = Vector256.Create(_r2c3 ^ unchecked(_k1 + 2 * W1));
        Vector256<uint> c2A = hiA ^ k, c3A = loA, c2B = hiB ^ k, c3B = loB;
        for (uint round = 3; round < 9; round++)
        {
            var (hi0A, lo0A) = MulHiLo(c0A, M0);
            var (hi0B, lo0B) = MulHiLo(c0B, M0);
            var (hi1A, lo1A) = MulHiLo(c2A, M1);
            var (hi1B, lo1B) = MulHiLo(c2B, M1);
            var k0 = Vector256.Create(_k0 + round * W0);
            var k1 = Vector256.Create(_k1 + round * W1);
            c0A = hi1A ^ c1A ^ k0;
            c0B = hi1B ^ c1B ^ k0;
            c1A = lo1A;
            c1B = lo1B;
            c2A = hi0A ^ c3A ^ k1;
            c2B = hi0B ^ c3B ^ k1;
            c3A = lo0A;
            c3B = lo0B;
        }
        // Round 10: only its first output word.
        k = Vector256.Create(unchecked(_k0 + 9 * W0));
        return (ToUniform(MulHi(c2A, M1) ^ c1A ^ k), ToUniform(MulHi(c2B, M1) ^ c1B ^ k));
    }

    /// <summary>Whether <see cref="Uniform32"/> may be called (AVX-512).</summary>
    public static bool IsWide => Avx512F.IsSupported;

    /// <summary><see cref="Uniform16"/> in 16 lanes: indices firstIndex + 0..15 (Low) and + 16..31 (High). AVX-512 only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (Vector512<float> Low, Vector512<float> High) Uniform32(uint firstIndex)
    {
        var index = Vector512.Create(firstIndex) + Vector512<uint>.Indices;
        var r2 = Vector512.Create(_c2Base);
        var (hiA, loA) = MulHiLo(r2 ^ index, M1);
        var (hiB, loB) = MulHiLo(r2 ^ (index + Vector512.Create(16u)), M1);
        var k = Vector512.Create(_r2c1 ^ (_k0 + W0));
        Vector512<uint> c0A = hiA ^ k, c1A = loA, c0B = hiB ^ k, c1B = loB;
        (hiA, loA) = MulHiLo(c0A, M0);
        (hiB, loB) = MulHiLo(c0B, M0);
        k = Vector512.Create(_r3hi1 ^ unchecked(_k0 + 2 * W0));
        c0A = c1A ^ k;
        c0B = c1B ^ k;
        c1A = c1B = Vector512.Create(_r3c1);
        k = Vector512.Create(_r2c3 ^ unchecked(_k1 + 2 * W1));
        Vector512<uint> c2A = hiA ^ k, c3A = loA, c2B = hiB ^ k, c3B = loB;
        for (uint round = 3; round < 9; round++)
        {
            var (hi0A, lo0A) = MulHiLo(c0A, M0);
            var (hi0B, lo0B) = MulHiLo(c0B, M0);
            var (hi1A, lo1A) = MulHiLo(c2A, M1);
            var (hi1B, lo1B) = MulHiLo(c2B, M1);
            var k0 = Vector512.Create(_k0 + round * W0);
            var k1 = Vector512.Create(_k1 + round * W1);
            c0A = hi1A ^ c1A ^ k0;
            c0B = hi1B ^ c1B ^ k0;
            c1A = lo1A;
            c1B = lo1B;
            c2A = hi0A ^ c3A ^ k1;
            c2B = hi0B ^ c3B ^ k1;
            c3A = lo0A;
            c3B = lo0B;
        }
        k = Vector512.Create(unchecked(_k0 + 9 * W0));
        return (ToUniform(MulHi(c2A, M1) ^ c1A ^ k), ToUniform(MulHi(c2B, M1) ^ c1B ^ k));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> MulHi(Vector512<uint> a, uint multiplier)
    {
        var m = Vector512.Create(multiplier);
        var even = Avx512F.Multiply(a, m);
        var odd = Avx512F.Multiply(Avx512F.ShiftRightLogical(a.AsUInt64(), 32).AsUInt32(), m);
        return Vector512.ConditionalSelect(Vector512.Create(0xFFFF_FFFF_0000_0000UL).AsUInt32(), odd.AsUInt32(), Avx512F.ShiftRightLogical(even, 32).AsUInt32());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<uint> Hi, Vector512<uint> Lo) MulHiLo(Vector512<uint> a, uint multiplier) =>
        (MulHi(a, multiplier), a * Vector512.Create(multiplier));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ToUniform(Vector512<uint> x)
    {
        var odd = ((x >> 9) << 1) | Vector512<uint>.One;
        return Vector512.ConvertToSingle(odd.AsInt32()) * Vector512.Create(1f / 16777216f);
    }

    /// <summary>destination[j] = Philox.Uniform(seed, position, sampleId, stream, firstIndex + j).</summary>
    public static void Uniforms(in SamplingParams p, int position, uint stream, uint firstIndex, Span<float> destination)
    {
        int j = 0;
        var philox = new CpuPhilox(p, position, stream);
        if (IsWide)
            for (; j <= destination.Length - 32; j += 32)
            {
                var (low, high) = philox.Uniform32(firstIndex + (uint)j);
                low.CopyTo(destination.Slice(j, 16));
                high.CopyTo(destination.Slice(j + 16, 16));
            }
        if (IsVectorized)
        {
            for (; j <= destination.Length - 16; j += 16)
            {
                var (low, high) = philox.Uniform16(firstIndex + (uint)j);
                low.CopyTo(destination.Slice(j, 8));
                high.CopyTo(destination.Slice(j + 8, 8));
            }
        }
        for (; j < destination.Length; j++)
            destination[j] = Philox.Uniform(p.SeedLo, p.SeedHi, position, p.SampleId, stream, firstIndex + (uint)j);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> MulHi(Vector256<uint> a, uint multiplier)
    {
        var m = Vector256.Create(multiplier);
        var even = Avx2.Multiply(a, m);                                                  // lanes 0, 2, 4, 6 as 64-bit products
        var odd = Avx2.Multiply(Avx2.ShiftRightLogical(a.AsUInt64(), 32).AsUInt32(), m); // lanes 1, 3, 5, 7
        return Avx2.Blend(Avx2.ShiftRightLogical(even, 32).AsUInt32(), odd.AsUInt32(), 0b1010_1010);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<uint> Hi, Vector256<uint> Lo) MulHiLo(Vector256<uint> a, uint multiplier) =>
        (MulHi(a, multiplier), a * Vector256.Create(multiplier));

    /// <summary>(2·(x >> 9) + 1) · 2^-24, as <see cref="Philox.ToUniform"/> (the odd integer is below 2^24: exact in float).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ToUniform(Vector256<uint> x)
    {
        var odd = ((x >> 9) << 1) | Vector256<uint>.One;
        return Vector256.ConvertToSingle(odd.AsInt32()) * Vector256.Create(1f / 16777216f);
    }
}
