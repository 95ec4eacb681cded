#version 450
// Embedding gather x[t, :] = table[tokens[t], :] for the tokens whose id falls in this dispatch's range of table rows
// [row_base, row_base + rows) (a large vocabulary is bound in ranges no larger than the device allows).
#include "common.glsl"
#define WEIGHT_BINDING 1
#include "dense_weights.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Tokens { int tokens[]; };  // [count]
layout(std430, set = 0, binding = 2) writeonly buffer X { float x[]; };        // [count, dim]

layout(push_constant) uniform Push {
    uint count;
    uint dim;
    uint rows;
    uint row_base;
    uint w_shift;
    uint pad0, pad1, pad2;
} pc;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.count * pc.dim; e += stride) {
        uint t = e / pc.dim, i = e % pc.dim;
        uint row = uint(tokens[t]) - pc.row_base;
        if (row < pc.rows) x[e] = weight(pc.w_shift + row * pc.dim + i);
    }
}
