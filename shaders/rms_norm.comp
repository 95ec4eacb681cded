#version 450
// RMSNorm: y[r, i] = x[src, i] · w[i] / sqrt(mean_i x[src, i]² + eps), one workgroup per output row. src = r, or
// rows[r] when a row map is given (flags & 1): the final norm of the LM head gathers the rows that need logits.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };      // [tokens, dim]
layout(std430, set = 0, binding = 1) readonly buffer Wt { float w[]; };      // [dim]
layout(std430, set = 0, binding = 2) readonly buffer Rows { int rows[]; };   // [out rows] when mapped
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };      // [out rows, dim]

layout(push_constant) uniform Push {
    uint out_rows;
    uint dim;
    float eps;
    uint flags;      // 1: rows are mapped through `rows`
} pc;

const uint MAX_SUBGROUPS = 64u;
shared float partial[MAX_SUBGROUPS];

void main() {
    uint r = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (r >= pc.out_rows) return;
    uint src = (pc.flags & 1u) != 0u ? uint(rows[r]) : r;
    uint tid = gl_LocalInvocationID.x, threads = gl_WorkGroupSize.x;
    uint xb = src * pc.dim, yb = r * pc.dim;
    float ss = 0.0;
    for (uint i = tid; i < pc.dim; i += threads) ss = fma(x[xb + i], x[xb + i], ss);
    ss = subgroupAdd(ss);
    if (subgroupElect()) partial[gl_SubgroupID] = ss;
    barrier();
    float total = 0.0;
    for (uint g = 0u; g < gl_NumSubgroups; g++) total += partial[g];
    float scale = 1.0 / sqrt(total / float(pc.dim) + pc.eps);
    for (uint i = tid; i < pc.dim; i += threads) y[yb + i] = x[xb + i] * scale * w[i];
}
