#version 450
// Top-tokens kernel: one workgroup per requested row of draft logits, the `count` most probable tokens of its
// untruncated warped distribution (softmax of (l - max) * inv_t; temperature 0: inv_t = 1). Ranking by probability
// is ranking by logit, so the kernel selects by logit and returns, per row, (status, sum of exp((l - max) * inv_t),
// then `count` (token, logit bits) pairs, best first, lowest token on ties, NO_INDEX past the finite logits). The host
// turns them into probabilities in double. See engine/Vulkan/VulkanBackend.TopTokens.cs.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Logits { float logits[]; };   // [bound rows, vocab]

float row_logit(uint src, uint i) { return logits[i]; }

#include "sampling.glsl"

layout(std430, set = 0, binding = 1) readonly buffer Rows { uint rows[]; };                  // [D] logits row of each request
layout(std430, set = 0, binding = 2) readonly buffer Params { SamplingParams params[]; };   // [D]
layout(std430, set = 0, binding = 3) writeonly buffer Out { uint result[]; };             // [D, 2 + 2 * count]

layout(push_constant) uniform Push {
    uint vocab;
    uint request_base;   // request of this dispatch's first workgroup
    uint logits_shift;   // element shift of the logits binding
    uint first_row;      // logits row at the start of the binding
    uint count;          // tokens per row, <= MAX_COUNT
    uint pad0;
    uint pad1;
    uint pad2;
} pc;

// As TopTokenRows.MaxDeviceCount: each thread keeps its best `count` (logit, token) pairs sorted in private memory.
const uint MAX_COUNT = 16u;

void main() {
    uint t = gl_LocalInvocationID.x;
    uint V = pc.vocab;
    uint K = pc.count;
    uint req = pc.request_base + gl_WorkGroupID.x;
    uint base = pc.logits_shift + (rows[req] - pc.first_row) * V;
    uint out_base = req * (2u + 2u * K);

    float mx;
    uint argmax_i, status;
    row_scan(0u, base, V, mx, argmax_i, status);
    // status comes from workgroup reductions, so every thread returns or none does.
    if (status != ROW_OK) {
        if (t == 0u) result[out_base] = status;
        return;
    }
    SamplingParams p = params[req];
    float inv_t = p.temperature == 0.0 ? 1.0 : 1.0 / p.temperature;

    // One pass: this thread's share of the denominator and its best K by logit (an equal logit ranks after those
    // kept before it, i.e. lower tokens first; -Inf has probability 0 and is never listed).
    float best_l[MAX_COUNT];
    uint best_i[MAX_COUNT];
    uint kept = 0u;
    float s = 0.0;
    for (uint i = t; i < V; i += gl_WorkGroupSize.x) {
        float x = logits[base + i];
        s += shifted_exp(x, mx, inv_t);
        if (x == NEG_INF || (kept == K && x <= best_l[K - 1u])) continue;
        uint at = kept < K ? kept++ : K - 1u;
        while (at > 0u && x > best_l[at - 1u]) {
            best_l[at] = best_l[at - 1u];
            best_i[at] = best_i[at - 1u];
            at--;
        }
        best_l[at] = x;
        best_i[at] = i;
    }
    float sum = wg_sum(s);

    // Merge: K rounds of a workgroup argmax over the threads' heads (larger logit, then lower token); the winner pops.
    uint head = 0u;
    for (uint j = 0u; j < K; j++) {
        float v = head < kept ? best_l[head] : NEG_INF;
        uint idx = head < kept ? best_i[head] : NO_INDEX;
        wg_argmax(v, idx);
        if (idx != NO_INDEX && head < kept && best_i[head] == idx) head++;
        if (t == 0u) {
            result[out_base + 2u + 2u * j] = idx;
            result[out_base + 3u + 2u * j] = floatBitsToUint(v);
        }
    }
    if (t == 0u) {
        result[out_base] = status;
        result[out_base + 1u] = floatBitsToUint(sum);
    }
}
