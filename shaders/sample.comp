#version 450
// Sample kernel: one workgroup per row. Greedy: argmax (lowest index on ties); otherwise the exponential race over
// the warped weights. Writes (token, logProb bits, status) per row; the host checks the status.
// See engine/Vulkan/VulkanBackend.Sample.cs.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Logits { float logits[]; };   // [rows of this dispatch, vocab]

float row_logit(uint src, uint i) { return logits[i]; }

#include "sampling.glsl"

layout(std430, set = 0, binding = 1) readonly buffer Params { SamplingParams params[]; };   // [R]
layout(std430, set = 0, binding = 2) writeonly buffer Out { uint result[]; };             // [R, 3]

layout(push_constant) uniform Push {
    uint vocab;
    uint row_base;       // global row of this dispatch's first workgroup
    uint logits_shift;   // element shift of the logits binding
    uint pad;
} pc;

void main() {
    uint V = pc.vocab;
    uint row = pc.row_base + gl_WorkGroupID.x;
    uint base = pc.logits_shift + gl_WorkGroupID.x * V;
    SamplingParams p = params[row];

    float mx;
    uint argmax_i, status;
    row_scan(0u, base, V, mx, argmax_i, status);
    uint token = NO_INDEX;
    float log_prob = 0.0;
    if (status == ROW_OK) {
        bool greedy = p.temperature == 0.0;
        float inv_t = greedy ? 1.0 : 1.0 / p.temperature;
        float full_sum = row_exp_sum(0u, base, V, mx, inv_t);
        if (greedy) {
            token = argmax_i;
        } else {
            float mass;
            Warp w = make_warp(0u, base, V, mx, p, mass);
            float best = -1.0;
            uint best_i = NO_INDEX;
            for (uint i = gl_LocalInvocationID.x; i < V; i += gl_WorkGroupSize.x) {
                float x = warp_weight(0u, base, w, i);
                if (x > 0.0) {
                    float s = race_score(x, p, p.position, p.stream, i);
                    if (s > best) { best = s; best_i = i; }
                }
            }
            wg_argmax(best, best_i);
            token = best_i;
        }
        log_prob = (logits[base + token] - mx) * inv_t - log(full_sum);
    }
    if (gl_LocalInvocationID.x == 0u) {
        result[3u * row] = token;
        result[3u * row + 1u] = floatBitsToUint(log_prob);
        result[3u * row + 2u] = status;
    }
}
