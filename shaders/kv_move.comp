#version 450
// kv_move: moves rows of 32-bit words between KV-cache slots, or appends new fp32 K/V rows into cache slots
// (fp32 or packed fp16). One shader for all modes (specialization constant MODE).
//
// Work: pairs (source row → destination row) grouped in segments. Workgroup (x, y) handles chunk x of the row
// (CHUNK words) for every pair of segment y, pairs in order. Word k of a row is always handled by the same
// invocation, so a word that one pair writes and a later pair of the segment reads or overwrites is touched by
// one invocation in program order: pairs keep their order without barriers (in-place compaction is safe).
//
// Large buffers: a buffer may be bound as up to 4 row-aligned windows (each within maxStorageBufferRange);
// the host gives every pair its window and its word base inside that window's binding (element shift included),
// so the hot loop has no divisions. When source and destination are one buffer, everything goes through the
// destination windows (no aliased bindings).
#include "common.glsl"

#define MODE_COPY 0
#define MODE_APPEND_F32 1
#define MODE_APPEND_F16 2

layout(constant_id = 1) const uint MODE = 0;
layout(constant_id = 2) const uint SRC_WINDOWS = 1;
layout(constant_id = 3) const uint DST_WINDOWS = 1;
layout(constant_id = 4) const uint SAME_BUFFER = 0;
// Words of a row one workgroup handles per pair (a multiple of the workgroup size).
layout(constant_id = 5) const uint CHUNK = 1024;
// Copy mode only: row size and every window shift are multiples of four words, so rows move as uvec4s (16 bytes
// an invocation), which CPU drivers such as lavapipe need to vectorise. The word → invocation map stays the same
// for every pair, so in-place compaction keeps its order guarantee.
layout(constant_id = 6) const uint WIDE = 0;

layout(std430, set = 0, binding = 0) readonly buffer Src0 { uint src0[]; };
layout(std430, set = 0, binding = 1) readonly buffer Src1 { uint src1[]; };
layout(std430, set = 0, binding = 2) readonly buffer Src2 { uint src2[]; };
layout(std430, set = 0, binding = 3) readonly buffer Src3 { uint src3[]; };
layout(std430, set = 0, binding = 4) buffer Dst0 { uint dst0[]; };
layout(std430, set = 0, binding = 5) buffer Dst1 { uint dst1[]; };
layout(std430, set = 0, binding = 6) buffer Dst2 { uint dst2[]; };
layout(std430, set = 0, binding = 7) buffer Dst3 { uint dst3[]; };
// [numSegments + 1] segment offsets (absent when segments are fixed runs of pairs), then [numPairs, 4]:
// source window, source word base, destination window, destination word base.
layout(std430, set = 0, binding = 8) readonly buffer Meta { uint meta[]; };
// The same windows viewed as 16-byte vectors (used when WIDE).
layout(std430, set = 0, binding = 0) readonly buffer Src0v { uvec4 src0v[]; };
layout(std430, set = 0, binding = 1) readonly buffer Src1v { uvec4 src1v[]; };
layout(std430, set = 0, binding = 2) readonly buffer Src2v { uvec4 src2v[]; };
layout(std430, set = 0, binding = 3) readonly buffer Src3v { uvec4 src3v[]; };
layout(std430, set = 0, binding = 4) buffer Dst0v { uvec4 dst0v[]; };
layout(std430, set = 0, binding = 5) buffer Dst1v { uvec4 dst1v[]; };
layout(std430, set = 0, binding = 6) buffer Dst2v { uvec4 dst2v[]; };
layout(std430, set = 0, binding = 7) buffer Dst3v { uvec4 dst3v[]; };

layout(push_constant) uniform Push {
    uint num_segments;
    uint row_words;       // destination words per row
    uint pairs_at;        // index in meta of the first pair
    uint pairs_per_segment; // > 0: segment g is pairs [g * n, (g + 1) * n) (independent appends); 0: offsets at meta[0 ..]
    uint num_pairs;
} pc;

uint load_dst(uint w, uint i) {
    if (DST_WINDOWS == 1 || w == 0) return dst0[i];
    if (DST_WINDOWS == 2 || w == 1) return dst1[i];
    if (DST_WINDOWS == 3 || w == 2) return dst2[i];
    return dst3[i];
}

uint load_src(uint w, uint i) {
    if (SAME_BUFFER != 0) return load_dst(w, i);
    if (SRC_WINDOWS == 1 || w == 0) return src0[i];
    if (SRC_WINDOWS == 2 || w == 1) return src1[i];
    if (SRC_WINDOWS == 3 || w == 2) return src2[i];
    return src3[i];
}

void store_dst(uint w, uint i, uint v) {
    if (DST_WINDOWS == 1 || w == 0) dst0[i] = v;
    else if (DST_WINDOWS == 2 || w == 1) dst1[i] = v;
    else if (DST_WINDOWS == 3 || w == 2) dst2[i] = v;
    else dst3[i] = v;
}

// fp32 bits → fp16 bits, round to nearest even (as System.Half), in integer arithmetic. packHalf2x16 would be
// shorter, and lavapipe's happens to match System.Half (checked on ties at every exponent, subnormals, the overflow
// boundary), but GLSL leaves its rounding implementation-defined and a driver may flush fp32 denormals, so the
// cache's bits would depend on the device. Overflow gives ±Inf; NaN stays a quiet NaN keeping the top payload bits.
uvec4 load_dst4(uint w, uint i) {
    if (DST_WINDOWS == 1 || w == 0) return dst0v[i];
    if (DST_WINDOWS == 2 || w == 1) return dst1v[i];
    if (DST_WINDOWS == 3 || w == 2) return dst2v[i];
    return dst3v[i];
}

uvec4 load_src4(uint w, uint i) {
    if (SAME_BUFFER != 0) return load_dst4(w, i);
    if (SRC_WINDOWS == 1 || w == 0) return src0v[i];
    if (SRC_WINDOWS == 2 || w == 1) return src1v[i];
    if (SRC_WINDOWS == 3 || w == 2) return src2v[i];
    return src3v[i];
}

void store_dst4(uint w, uint i, uvec4 v) {
    if (DST_WINDOWS == 1 || w == 0) dst0v[i] = v;
    else if (DST_WINDOWS == 2 || w == 1) dst1v[i] = v;
    else if (DST_WINDOWS == 3 || w == 2) dst2v[i] = v;
    else dst3v[i] = v;
}

uint f32_to_f16(uint x) {
    uint sign = (x >> 16) & 0x8000u;
    uint a = x & 0x7FFFFFFFu;
    if (a >= 0x7F800000u) return sign | 0x7C00u | (a > 0x7F800000u ? 0x0200u | ((a >> 13) & 0x3FFu) : 0u);
    if (a >= 0x477FF000u) return sign | 0x7C00u;                 // ≥ 65520 rounds to Inf
    if (a >= 0x38800000u)                                          // normal half (≥ 2^-14): rebias, round at bit 13
        return sign | ((a + 0x0FFFu + ((a >> 13) & 1u) - 0x38000000u) >> 13);
    if (a <= 0x33000000u) return sign;                             // ≤ 2^-25 rounds to ±0 (2^-25 is a tie to even 0)
    uint m = (a & 0x007FFFFFu) | 0x00800000u;                      // subnormal half: units of 2^-24
    uint shift = 126u - (a >> 23);                                 // 14 .. 24
    uint q = m >> shift;
    uint rem = m & ((1u << shift) - 1u);
    uint half_unit = 1u << (shift - 1u);
    if (rem > half_unit || (rem == half_unit && (q & 1u) != 0u)) q += 1u;
    return sign | q;
}

void main() {
    uint local = gl_WorkGroupSize.x;
    uint tid = gl_LocalInvocationID.x;
    uint chunks = (pc.row_words + CHUNK - 1u) / CHUNK;
    for (uint g = gl_WorkGroupID.y; g < pc.num_segments; g += gl_NumWorkGroups.y) {
        uint first = pc.pairs_per_segment != 0 ? g * pc.pairs_per_segment : meta[g];
        uint end = pc.pairs_per_segment != 0 ? min(first + pc.pairs_per_segment, pc.num_pairs) : meta[g + 1u];
        for (uint c = gl_WorkGroupID.x; c < chunks; c += gl_NumWorkGroups.x) {
            uint k0 = c * CHUNK + tid;
            uint k1 = min(pc.row_words, (c + 1u) * CHUNK);
            for (uint p = first; p < end; p++) {
                uint at = pc.pairs_at + 4u * p;
                uint sw = meta[at], sbase = meta[at + 1u], dw = meta[at + 2u], dbase = meta[at + 3u];
                if (MODE == MODE_APPEND_F16) {
                    for (uint k = k0; k < k1; k += local) {
                        uint lo = f32_to_f16(load_src(sw, sbase + 2u * k));
                        uint hi = f32_to_f16(load_src(sw, sbase + 2u * k + 1u));
                        store_dst(dw, dbase + k, lo | (hi << 16));
                    }
                } else if (WIDE != 0) {
                    uint s4 = sbase >> 2, d4 = dbase >> 2;
                    for (uint k = (c * CHUNK >> 2) + tid; k < (k1 >> 2); k += local)
                        store_dst4(dw, d4 + k, load_src4(sw, s4 + k));
                } else {
                    for (uint k = k0; k < k1; k += local)
                        store_dst(dw, dbase + k, load_src(sw, sbase + k));
                }
            }
        }
    }
}
