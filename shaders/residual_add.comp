#version 450
// Residual add y[e] += x[e] over count elements. The projections fuse their residual (accumulate flag), so the
// dense executor needs this only where no projection writes the stream.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint count;
    uint pad0, pad1, pad2;
} pc;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < pc.count; e += stride) y[e] += x[e];
}
