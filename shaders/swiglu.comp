#version 450
// SwiGLU: gate[t, i] = silu(gate[t, i]) · up[t, up_col + i] = gate / (1 + exp(−gate)) · up, for i < width, over rows
// of `stride` floats in both buffers. A fused gate/up projection binds one buffer as both ([tokens, 2·width]: gate
// columns, then up columns; up_col = width); separate buffers use stride = width, up_col = 0.
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer Gate { float gate[]; };          // [tokens, stride], gate columns overwritten
layout(std430, set = 0, binding = 1) readonly buffer Up { float up[]; };     // [tokens, stride]

layout(push_constant) uniform Push {
    uint count;      // tokens · width
    uint width;
    uint stride;
    uint up_col;
} pc;

void main() {
    uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.count; e += step) {
        uint at = (e / pc.width) * pc.stride + e % pc.width;
        float g = gate[at];
        gate[at] = g / (1.0 + exp(-g)) * up[at + pc.up_col];
    }
}
