#version 450
// Plain word copy dst[i] = src[i]: the yardstick for the device's copy bandwidth in benchmarks
// (kv_move is reported as a fraction of it).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { uint src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { uint dst[]; };

layout(push_constant) uniform Push {
    uint count;       // words to copy
    uint src_shift;   // element shift of the source binding (see VulkanBuffer.Bind)
    uint dst_shift;
    uint pad;
} pc;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride)
        dst[pc.dst_shift + i] = src[pc.src_shift + i];
}
