// Philox-4x32-10, bit-identical to engine/Random/Philox.cs. Counter (position, sampleId, stream, index),
// key = the 64-bit seed as (lo, hi).
#ifndef PHILOX_GLSL
#define PHILOX_GLSL

const uint RNG_STREAM_TARGET = 0u;
const uint RNG_STREAM_ACCEPT = 1u;

uint philox(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1) {
    for (int round = 0; round < 10; ++round) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, c0, hi0, lo0);
        umulExtended(0xCD9E8D57u, c2, hi1, lo1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c0;
}

// Uniform in (0, 1), exactly representable in float: (2 * (x >> 9) + 1) * 2^-24.
float philox_uniform(uint x) {
    return float((x >> 9) * 2u + 1u) * (1.0 / 16777216.0);
}

#endif
