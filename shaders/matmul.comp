#version 450
// Tiled projection for many tokens: y[t, col + o] (+)= Σ_i x[t, i]·W[o, i] (+ bias[o]). A workgroup of 256 threads
// computes a 64-token × 64-row tile of y, each thread a 4 × 4 block in registers; the input and weight tiles pass
// through shared memory 16 columns of the input at a time (stored transposed, so the inner loop reads rows).
#include "common.glsl"
#define WEIGHT_BINDING 1
#include "dense_weights.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };      // [tokens, x_stride]
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };  // [out rows]
layout(std430, set = 0, binding = 3) buffer Y { float y[]; };                // [tokens, y_stride]

layout(push_constant) uniform Push {
    uint tokens;
    uint in_dim;
    uint rows;
    uint row_base;
    uint x_stride;
    uint y_stride;
    uint y_col;
    uint w_shift;
    uint flags;      // 1: add bias, 2: accumulate into y
    uint pad0, pad1, pad2;
} pc;

const uint BT = 64u, BO = 64u, BK = 16u;
shared float xs[BK][BT + 1u];
shared float ws[BK][BO + 1u];

void main() {
    uint tid = gl_LocalInvocationID.x;          // 256 threads: a 16 × 16 grid of 4 × 4 blocks
    uint tx = tid % 16u, ty = tid / 16u;
    uint o0 = gl_WorkGroupID.x * BO, t0 = gl_WorkGroupID.y * BT;
    float acc[4][4];
    for (uint a = 0u; a < 4u; a++) for (uint b = 0u; b < 4u; b++) acc[a][b] = 0.0;
    for (uint k0 = 0u; k0 < pc.in_dim; k0 += BK) {
        // Each thread loads 4 input and 4 weight elements of the tiles (zero outside the matrices).
        for (uint l = 0u; l < 4u; l++) {
            uint e = tid + l * 256u, row = e / BK, col = e % BK;
            uint t = t0 + row, o = o0 + row, i = k0 + col;
            xs[col][row] = (t < pc.tokens && i < pc.in_dim) ? x[t * pc.x_stride + i] : 0.0;
            ws[col][row] = (o < pc.rows && i < pc.in_dim) ? weight(pc.w_shift + o * pc.in_dim + i) : 0.0;
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk++) {
            float xa[4], wb[4];
            for (uint a = 0u; a < 4u; a++) xa[a] = xs[kk][ty * 4u + a];
            for (uint b = 0u; b < 4u; b++) wb[b] = ws[kk][tx * 4u + b];
            for (uint a = 0u; a < 4u; a++) for (uint b = 0u; b < 4u; b++) acc[a][b] = fma(xa[a], wb[b], acc[a][b]);
        }
        barrier();
    }
    for (uint a = 0u; a < 4u; a++) {
        uint t = t0 + ty * 4u + a;
        if (t >= pc.tokens) continue;
        for (uint b = 0u; b < 4u; b++) {
            uint r = o0 + tx * 4u + b;
            if (r >= pc.rows) continue;
            uint o = pc.row_base + r;
            float s = acc[a][b];
            if ((pc.flags & 1u) != 0u) s += bias[o];
            uint at = t * pc.y_stride + pc.y_col + o;
            y[at] = (pc.flags & 2u) != 0u ? y[at] + s : s;
        }
    }
}
