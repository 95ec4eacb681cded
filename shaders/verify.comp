#version 450
// Verify kernel: one workgroup per sample walks its draft tree (engine/Reference/ReferenceVerifier.cs is the plain
// statement). Greedy: accept the child holding the target argmax. Otherwise, at each node, the children in index
// order: accept x if u * q(x) < p(x); else the residual p <- norm(max(0, p - q)) (Sampled) or p(x) <- 0
// (Deterministic); with no child accepted, the exponential race over p (stream Target) gives the next token.
// p lives unnormalised, with its mass, in the work buffer; q is recomputed from the draft row.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Target { float target[]; };   // [rows of this dispatch, vocab]
layout(std430, set = 0, binding = 1) readonly buffer Draft { float draft[]; };     // same rows, or a dummy

float row_logit(uint src, uint i) { return src == 0u ? target[i] : draft[i]; }

#include "sampling.glsl"

layout(std430, set = 0, binding = 2) readonly buffer Params { SamplingParams params[]; };   // [S]
// NodeOffsets [S + 1] at 0, DraftTokens [N] at tokens_at, Parents [N] at parents_at, Kinds [S] at kinds_at.
layout(std430, set = 0, binding = 3) readonly buffer Meta { int meta[]; };
layout(std430, set = 0, binding = 4) coherent buffer Work { float work[]; };         // [samples of this dispatch, vocab]
// [S, 4] (accepted count, next token, status, status row), then AcceptedNodes [N] at nodes_at, then LogProbs
// bits [N + S] at log_probs_at.
layout(std430, set = 0, binding = 5) coherent writeonly buffer Out { uint result[]; };

layout(push_constant) uniform Push {
    uint vocab;
    uint sample_base;    // global sample of this dispatch's first workgroup
    uint row_base;       // global logit row at the start of the target/draft bindings
    uint target_shift;
    uint draft_shift;
    uint work_shift;
    uint tokens_at;
    uint parents_at;
    uint kinds_at;
    uint nodes_at;
    uint log_probs_at;
    uint pad;
} pc;

const uint DRAFT_STATUS = 16u;   // added to a row status when the bad row is the draft's

void main() {
    uint V = pc.vocab;
    uint t = gl_LocalInvocationID.x;
    uint s = pc.sample_base + gl_WorkGroupID.x;
    int node_base = meta[s];
    int n = meta[s + 1u] - node_base;
    uint row_base_s = uint(node_base) + s;
    SamplingParams p = params[s];
    bool greedy = p.temperature == 0.0;
    float inv_t = greedy ? 1.0 : 1.0 / p.temperature;
    bool sampled_kind = meta[pc.kinds_at + s] == 0;
    uint pbase = pc.work_shift + gl_WorkGroupID.x * V;

    for (uint i = t; i < uint(n); i += gl_WorkGroupSize.x) result[pc.nodes_at + uint(node_base) + i] = NO_INDEX;
    for (uint i = t; i <= uint(n); i += gl_WorkGroupSize.x) result[pc.log_probs_at + row_base_s + i] = 0u;
    sync();

    int node = -1;
    int pos = p.position;
    uint accepted = 0u;
    uint next = NO_INDEX;
    uint status = ROW_OK;
    uint bad_row = 0u;
    while (true) {
        uint row = row_base_s + uint(node + 1);
        uint tbase = pc.target_shift + (row - pc.row_base) * V;
        uint dbase = pc.draft_shift + (row - pc.row_base) * V;
        float mx;
        uint amax, st;
        row_scan(0u, tbase, V, mx, amax, st);
        if (st != ROW_OK) { status = st; bad_row = row; break; }
        float full_sum = row_exp_sum(0u, tbase, V, mx, inv_t);
        int accepted_child = -1;
        if (greedy) {
            for (int c = node + 1; c < n; ++c)
                if (meta[pc.parents_at + uint(node_base + c)] == node && meta[pc.tokens_at + uint(node_base + c)] == int(amax)) {
                    accepted_child = c;
                    break;
                }
            next = amax;
        } else {
            float mass_p;
            Warp wp = make_warp(0u, tbase, V, mx, p, mass_p);
            for (uint i = t; i < V; i += gl_WorkGroupSize.x) work[pbase + i] = warp_weight(0u, tbase, wp, i);
            sync();
            bool has_q = false;
            Warp wq = wp;
            float mass_q = 1.0;
            uint attempt = 0u;
            for (int c = node + 1; c < n; ++c) {
                if (meta[pc.parents_at + uint(node_base + c)] != node) continue;
                if (!has_q && sampled_kind) {
                    float dmx;
                    uint damax, dst;
                    row_scan(1u, dbase, V, dmx, damax, dst);
                    if (dst != ROW_OK) { status = dst + DRAFT_STATUS; bad_row = row; break; }
                    wq = make_warp(1u, dbase, V, dmx, p, mass_q);
                    has_q = true;
                }
                uint x = uint(meta[pc.tokens_at + uint(node_base + c)]);
                float qx = has_q ? warp_weight(1u, dbase, wq, x) / mass_q : 1.0;
                float u = philox_uniform(philox(uint(pos), p.sample_id, RNG_STREAM_ACCEPT, attempt, p.seed_lo, p.seed_hi));
                float px = work[pbase + x] / mass_p;
                sync();
                if (u * qx < px) { accepted_child = c; break; }
                attempt++;
                if (has_q) {
                    // Residual max(0, P/mass_p - Q/mass_q): its mass first, written only if it has any.
                    float inv_p = 1.0 / mass_p;
                    float neg_inv_q = -1.0 / mass_q;
                    float m = 0.0;
                    for (uint i = t; i < V; i += gl_WorkGroupSize.x)
                        m += max(0.0, work[pbase + i] * inv_p + warp_weight(1u, dbase, wq, i) * neg_inv_q);
                    m = wg_sum(m);
                    if (m > 0.0) {
                        for (uint i = t; i < V; i += gl_WorkGroupSize.x)
                            work[pbase + i] = max(0.0, work[pbase + i] * inv_p + warp_weight(1u, dbase, wq, i) * neg_inv_q);
                        mass_p = m;
                    }
                    sync();
                } else {
                    float old = work[pbase + x];
                    sync();
                    if (t == 0u) work[pbase + x] = 0.0;
                    sync();
                    float m = 0.0;
                    for (uint i = t; i < V; i += gl_WorkGroupSize.x) m += work[pbase + i];
                    m = wg_sum(m);
                    if (m > 0.0) mass_p = m;
                    else if (t == 0u) work[pbase + x] = old;
                    sync();
                }
            }
            if (status != ROW_OK) break;
            if (accepted_child < 0) {
                float best = -1.0;
                uint best_i = NO_INDEX;
                for (uint i = t; i < V; i += gl_WorkGroupSize.x) {
                    float w = work[pbase + i];
                    if (w > 0.0) {
                        float score = race_score(w, p, pos, RNG_STREAM_TARGET, i);
                        if (score > best) { best = score; best_i = i; }
                    }
                }
                wg_argmax(best, best_i);
                next = best_i;
            }
        }
        uint emitted = accepted_child >= 0 ? uint(meta[pc.tokens_at + uint(node_base + accepted_child)]) : next;
        float lp = (target[tbase + emitted] - mx) * inv_t - log(full_sum);
        if (t == 0u) result[pc.log_probs_at + row_base_s + accepted] = floatBitsToUint(lp);
        if (accepted_child < 0) break;
        if (t == 0u) result[pc.nodes_at + uint(node_base) + accepted] = uint(accepted_child);
        accepted++;
        node = accepted_child;
        pos++;
        sync();
    }
    if (t == 0u) {
        result[4u * s] = accepted;
        result[4u * s + 1u] = next;
        result[4u * s + 2u] = status;
        result[4u * s + 3u] = bad_row;
    }
}
