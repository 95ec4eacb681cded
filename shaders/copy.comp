#version 450
// Plain word copy dst[i] = src[i]: the yardstick for the device's copy bandwidth in benchmarks
// (kv_move is reported as a fraction of it). When both shifts and the count are multiples of four the copy
// moves uvec4s (16 bytes per invocation), which CPU drivers such as lavapipe need to vectorise.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { uint src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { uint dst[]; };
// The same bindings viewed as 16-byte vectors.
layout(std430, set = 0, binding = 0) readonly buffer Src4 { uvec4 src4[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst4 { uvec4 dst4[]; };

layout(push_constant) uniform Push {
    uint count;       // words to copy
    uint src_shift;   // element shift of the source binding (see VulkanBuffer.Bind)
    uint dst_shift;
    uint pad;
} pc;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (((pc.count | pc.src_shift | pc.dst_shift) & 3u) == 0u) {
        uint n4 = pc.count >> 2, s4 = pc.src_shift >> 2, d4 = pc.dst_shift >> 2;
        for (uint i = gl_GlobalInvocationID.x; i < n4; i += stride)
            dst4[d4 + i] = src4[s4 + i];
        return;
    }
    for (uint i = gl_GlobalInvocationID.x; i < pc.count; i += stride)
        dst[pc.dst_shift + i] = src[pc.src_shift + i];
}
