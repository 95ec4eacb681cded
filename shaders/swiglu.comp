#version 450
// SwiGLU: gate[e] = silu(gate[e]) · up[e] = gate[e] / (1 + exp(−gate[e])) · up[e], elementwise over [tokens, width].
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer Gate { float gate[]; };          // [tokens, width], overwritten
layout(std430, set = 0, binding = 1) readonly buffer Up { float up[]; };     // [tokens, width]

layout(push_constant) uniform Push {
    uint count;
    uint pad0, pad1, pad2;
} pc;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.count; e += stride) {
        float g = gate[e];
        gate[e] = g / (1.0 + exp(-g)) * up[e];
    }
}
