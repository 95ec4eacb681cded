#version 450
// Matrix-vector projection for few tokens: y[t, col + o] (+)= Σ_i x[t, i]·W[o, i] (+ bias[o]) for the rows o of this
// dispatch's weight range. A workgroup per ROWS weight rows (2-D grid past maxWorkgroupCountX); its threads stride over
// the input in vec4 steps (scalar when the sizes are not multiples of four), each keeping partial sums for a block
// of up to 4 tokens so a weight load feeds 4 FMAs; subgroupAdd, then the subgroups' sums in a fixed order through
// shared memory. A token's arithmetic is the same whatever the number of tokens (batch invariance).
#include "common.glsl"
#define WEIGHT_BINDING 1
#include "dense_weights.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };      // [tokens, x_stride]
layout(std430, set = 0, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };  // [out rows] (bound to anything when unused)
layout(std430, set = 0, binding = 3) buffer Y { float y[]; };                // [tokens, y_stride]

layout(push_constant) uniform Push {
    uint tokens;
    uint in_dim;
    uint rows;       // weight rows in this dispatch
    uint row_base;   // global index of its first row (bias index, output column − y_col)
    uint x_stride;
    uint y_stride;
    uint y_col;      // output column of global row 0
    uint w_shift;    // element shift of the weight binding (see VulkanBuffer.Bind)
    uint flags;      // 1: add bias, 2: accumulate into y
    uint pad0, pad1, pad2;
} pc;

const uint TOKEN_BLOCK = 4u;
const uint MAX_SUBGROUPS = 64u;
// Weight rows per workgroup (specialization constant 2): fewer, fuller workgroups and one barrier pair per token
// block for all of them, which CPU drivers such as lavapipe need; a row's arithmetic does not depend on it.
layout(constant_id = 2) const uint ROWS = 4u;
shared float partial[MAX_SUBGROUPS * 4u * TOKEN_BLOCK];   // [subgroup][row][token], ROWS ≤ 4

void main() {
    uint r0 = (gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x) * ROWS;
    if (r0 >= pc.rows) return;
    uint nr = min(ROWS, pc.rows - r0);
    uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
    uint k = pc.in_dim;
    bool wide = ((k | pc.x_stride | pc.w_shift) & 3u) == 0u;
    for (uint t0 = 0u; t0 < pc.tokens; t0 += TOKEN_BLOCK) {
        uint nt = min(TOKEN_BLOCK, pc.tokens - t0);
        for (uint rr = 0u; rr < nr; rr++) {
            uint w_row = pc.w_shift + (r0 + rr) * k;
            float acc[TOKEN_BLOCK];
            for (uint j = 0u; j < TOKEN_BLOCK; j++) acc[j] = 0.0;
            if (wide) {
                uint k4 = k >> 2, w4 = w_row >> 2, xs4 = pc.x_stride >> 2;
                for (uint c = tid; c < k4; c += threads) {
                    vec4 wv = weight4(w4 + c);
                    for (uint j = 0u; j < TOKEN_BLOCK; j++) {
                        if (j < nt) {
                            vec4 xv = x4[(t0 + j) * xs4 + c];
                            float a = acc[j];
                            a = fma(wv.x, xv.x, a);
                            a = fma(wv.y, xv.y, a);
                            a = fma(wv.z, xv.z, a);
                            a = fma(wv.w, xv.w, a);
                            acc[j] = a;
                        }
                    }
                }
            } else {
                for (uint i = tid; i < k; i += threads) {
                    float wv = weight(w_row + i);
                    for (uint j = 0u; j < TOKEN_BLOCK; j++)
                        if (j < nt) acc[j] = fma(wv, x[(t0 + j) * pc.x_stride + i], acc[j]);
                }
            }
            for (uint j = 0u; j < TOKEN_BLOCK; j++) {
                float s = subgroupAdd(acc[j]);
                if (subgroupElect()) partial[(gl_SubgroupID * 4u + rr) * TOKEN_BLOCK + j] = s;
            }
        }
        barrier();
        if (tid < nr * TOKEN_BLOCK) {
            uint rr = tid / TOKEN_BLOCK, j = tid % TOKEN_BLOCK;
            if (j < nt) {
                float s = 0.0;
                for (uint g = 0u; g < gl_NumSubgroups; g++) s += partial[(g * 4u + rr) * TOKEN_BLOCK + j];
                uint o = pc.row_base + r0 + rr;
                if ((pc.flags & 1u) != 0u) s += bias[o];
                uint at = (t0 + j) * pc.y_stride + pc.y_col + o;
                y[at] = (pc.flags & 2u) != 0u ? y[at] + s : s;
            }
        }
        barrier();
    }
}
