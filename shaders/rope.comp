#version 450
// Rotary embedding: x' = x·cos + rotate_half(x)·sin per head, rotate_half(x) = (−x₂, x₁), with cos and sin looked up
// by the token's position in tables the host builds once ([positions, head_dim], as CpuDense.RopeTable rounds them).
// The source row holds q_heads, then k_heads, then v_heads heads (a fused q/k/v projection; Qwen2's biases already
// added): q and k heads are rotated, v heads copied, each group into its own destination [tokens, stride]. With
// k_heads = v_heads = 0 and the source bound as the q destination this is the plain rotation in place. One
// invocation per (token, head, pair); it reads its pair before it writes it, so in-place use is safe.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };    // [tokens, src_stride]
layout(std430, set = 0, binding = 1) readonly buffer Pos { int positions[]; }; // [tokens]
layout(std430, set = 0, binding = 2) readonly buffer Cos { float cos_t[]; };  // [table positions, head_dim]
layout(std430, set = 0, binding = 3) readonly buffer Sin { float sin_t[]; };  // [table positions, head_dim]
layout(std430, set = 0, binding = 4) buffer Q { float q[]; };                 // [tokens, q_stride]
layout(std430, set = 0, binding = 5) buffer K { float k[]; };                 // [tokens, kv_stride]
layout(std430, set = 0, binding = 6) buffer V { float v[]; };                 // [tokens, kv_stride]

layout(push_constant) uniform Push {
    uint tokens;
    uint head_dim;
    uint src_stride;
    uint q_heads;
    uint k_heads;
    uint v_heads;
    uint q_stride;
    uint kv_stride;
} pc;

void main() {
    uint half_dim = pc.head_dim / 2u;
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint per_token = (pc.q_heads + pc.k_heads + pc.v_heads) * half_dim;
    if (id >= pc.tokens * per_token) return;
    uint t = id / per_token, rest = id % per_token, h = rest / half_dim, i = rest % half_dim;
    uint from = t * pc.src_stride + h * pc.head_dim;
    float a = src[from + i], b = src[from + i + half_dim];
    if (h >= pc.q_heads + pc.k_heads) {
        uint to = t * pc.kv_stride + (h - pc.q_heads - pc.k_heads) * pc.head_dim;
        v[to + i] = a;
        v[to + i + half_dim] = b;
        return;
    }
    uint p = uint(positions[t]) * pc.head_dim;
    float ra = a * cos_t[p + i] - b * sin_t[p + i];
    float rb = b * cos_t[p + i + half_dim] + a * sin_t[p + i + half_dim];
    if (h < pc.q_heads) {
        uint to = t * pc.q_stride + h * pc.head_dim;
        q[to + i] = ra;
        q[to + i + half_dim] = rb;
    } else {
        uint to = t * pc.kv_stride + (h - pc.q_heads) * pc.head_dim;
        k[to + i] = ra;
        k[to + i + half_dim] = rb;
    }
}
