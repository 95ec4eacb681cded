#version 450
// Matrix-vector projection for few tokens: y[t, col + o] (+)= Σ_i x[t, i]·W[o, i] (+ bias[o]) for the rows o of this
// dispatch's weight range. One workgroup per weight row (2-D grid past maxWorkgroupCountX); its threads stride over
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
shared float partial[MAX_SUBGROUPS][TOKEN_BLOCK];

void main() {
    uint r = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (r >= pc.rows) return;
    uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
    uint k = pc.in_dim;
    uint w_row = pc.w_shift + r * k;
    bool wide = ((k | pc.x_stride | w_row) & 3u) == 0u;
    for (uint t0 = 0u; t0 < pc.tokens; t0 += TOKEN_BLOCK) {
        uint nt = min(TOKEN_BLOCK, pc.tokens - t0);
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
            if (subgroupElect()) partial[gl_SubgroupID][j] = s;
        }
        barrier();
        if (tid < nt) {
            float s = 0.0;
            for (uint g = 0u; g < gl_NumSubgroups; g++) s += partial[g][tid];
            uint o = pc.row_base + r;
            if ((pc.flags & 1u) != 0u) s += bias[o];
            uint at = (t0 + tid) * pc.y_stride + pc.y_col + o;
            y[at] = (pc.flags & 2u) != 0u ? y[at] + s : s;
        }
        barrier();
    }
}
