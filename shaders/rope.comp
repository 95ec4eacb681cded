#version 450
// Rotary embedding in place: x' = x·cos + rotate_half(x)·sin per head, rotate_half(x) = (−x₂, x₁), with cos and sin
// looked up by the token's position in tables the host builds once ([positions, head_dim], as CpuDense.RopeTable
// rounds them). One invocation per (token, head, pair). Qwen2's q/k/v biases are added by the projection before.
#include "common.glsl"

layout(std430, set = 0, binding = 0) buffer Data { float data[]; };          // [tokens, row_stride]
layout(std430, set = 0, binding = 1) readonly buffer Pos { int positions[]; }; // [tokens]
layout(std430, set = 0, binding = 2) readonly buffer Cos { float cos_t[]; };  // [table positions, head_dim]
layout(std430, set = 0, binding = 3) readonly buffer Sin { float sin_t[]; };  // [table positions, head_dim]

layout(push_constant) uniform Push {
    uint tokens;
    uint heads;
    uint head_dim;
    uint row_stride;
} pc;

void main() {
    uint half_dim = pc.head_dim / 2u;
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint per_token = pc.heads * half_dim;
    if (id >= pc.tokens * per_token) return;
    uint t = id / per_token, rest = id % per_token, h = rest / half_dim, i = rest % half_dim;
    uint base = t * pc.row_stride + h * pc.head_dim;
    uint p = uint(positions[t]) * pc.head_dim;
    float a = data[base + i], b = data[base + i + half_dim];
    data[base + i] = a * cos_t[p + i] - b * sin_t[p + i];
    data[base + i + half_dim] = b * cos_t[p + i + half_dim] + a * sin_t[p + i + half_dim];
}
