#version 450
// Paged attention over one layer's KV cache, causal or tree-masked, grouped-query.
// One workgroup per (query token, HG query heads of one KV group): the K and V rows of each visible slot are
// read once for all HG heads. Keys are walked in chunks of WG slots with an online (running-max) softmax in
// fp32: one thread scores one slot for the HG heads, subgroup + shared-memory reductions give the chunk's max and
// sum, then threads over (head, dim) rescale and accumulate the V rows of the chunk.
// A token that sees no slot writes zeros.
// Long key ranges are split over grid z (flash-decoding): each split writes its unnormalised partial
// (Σ p·v, running max m, Σ p) and attention_combine.comp merges them. Besides parallelism for long contexts the
// split bounds the work of one invocation: llvmpipe (lavapipe) silently ends an invocation after 65535 loop
// iterations in total (its guard against infinite loops), so the host sizes splits to stay well under that.
#include "common.glsl"
#include "attention_kv.glsl"

layout(constant_id = 1) const uint HEAD_DIM = 128;
layout(constant_id = 2) const uint HG = 1;        // query heads per workgroup (divides the GQA group), <= MAX_HG
layout(constant_id = 3) const bool KV_F16 = false;
const uint MAX_HG = 8;
#define WG gl_WorkGroupSize.x

layout(std430, set = 0, binding = 0) readonly buffer Query { float q[]; };      // [tokens, numHeads, HEAD_DIM]
layout(std430, set = 0, binding = 1) readonly buffer Keys { uint kc[]; };       // [blocks, blockSize, kvHeads, HEAD_DIM] words
layout(std430, set = 0, binding = 2) readonly buffer Values { uint vc[]; };     // same layout
layout(std430, set = 0, binding = 3) writeonly buffer Output { float o[]; };    // [tokens, numHeads, HEAD_DIM]
// Metadata sections: token → sample [T], query offsets [S+1], context lengths [S], block tables [S, maxBlocks],
// tree mask [T, maskWords] (absent when causal).
layout(std430, set = 0, binding = 4) readonly buffer Meta { int meta[]; };
// Partials when splits > 1: [tokens of this dispatch, numHeads, splits, HEAD_DIM + 2] = (Σ p·v, m, Σ p).
layout(std430, set = 0, binding = 5) writeonly buffer Partial { float part[]; };

layout(push_constant) uniform Push {
    uint token_base;    // global index of this dispatch's first token (grid x = token - token_base)
    uint q_shift;       // element shift of the query binding, which starts at token_base's row
    uint o_shift;       // likewise for the output binding
    uint num_heads;
    uint group_size;    // query heads per KV head
    uint row_words;     // words per cache slot (all KV heads)
    uint block_size;
    uint max_blocks;
    uint mask_words;
    uint causal;        // 1: new token j visible iff j <= i; 0: tree mask
    uint sec_sample, sec_offsets, sec_contexts, sec_tables, sec_mask;
    float scale;
    uint keys_per_split; // a multiple of WG
    uint splits;         // 1: normalise into the output; else write partials
} pc;

#define NEG_INF uintBitsToFloat(0xff800000u)

shared float q_sh[HG * HEAD_DIM];     // scaled queries of the HG heads
shared float acc_sh[HG * HEAD_DIM];   // running Σ p·v, rescaled at each new max
shared float p_sh[HG * WG];           // chunk probabilities exp(s - m)
shared float max_sh[HG * WG];         // per-subgroup chunk maxima (gl_NumSubgroups <= WG)
shared float sum_sh[HG * WG];         // per-subgroup chunk sums
shared uint base_sh[WG];              // word index of each chunk slot's KV-head row
shared float alpha_sh[HG];            // per-head rescale of this chunk, then 1 / l at the end

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint local_token = gl_WorkGroupID.x;
    uint t = pc.token_base + local_token;
    uint h0 = gl_WorkGroupID.y * HG;
    uint kv_head = h0 / pc.group_size;

    int s = meta[pc.sec_sample + t];
    uint first = uint(meta[pc.sec_offsets + s]);
    uint n = uint(meta[pc.sec_offsets + s + 1]) - first;
    uint context = uint(meta[pc.sec_contexts + s]);
    uint i = t - first;
    uint num_keys = pc.causal != 0u ? context + i + 1u : context + n;
    uint head_words = KV_HEAD_WORDS(HEAD_DIM, KV_F16);

    uint q_base = pc.q_shift + (local_token * pc.num_heads + h0) * HEAD_DIM;
    for (uint e = tid; e < HG * HEAD_DIM; e += WG) {
        q_sh[e] = q[q_base + e] * pc.scale;
        acc_sh[e] = 0.0;
    }
    float m[MAX_HG], l[MAX_HG], alpha[MAX_HG], sc[MAX_HG];   // indexed by unrolled loops only
    for (uint h = 0u; h < HG; h++) { m[h] = NEG_INF; l[h] = 0.0; }
    barrier();

    uint split = gl_WorkGroupID.z;
    uint key_begin = split * pc.keys_per_split;
    uint key_end = min(num_keys, key_begin + pc.keys_per_split);
    for (uint c = key_begin; c < key_end; c += WG) {
        uint logical = c + tid;
        bool valid = logical < key_end;
        if (valid && pc.causal == 0u && logical >= context) {
            uint j = logical - context;
            valid = ((uint(meta[pc.sec_mask + t * pc.mask_words + j / 32u]) >> (j % 32u)) & 1u) != 0u;
        }
        uint base = 0u;
        for (uint h = 0u; h < HG; h++) sc[h] = NEG_INF;
        if (valid) {
            uint block = uint(meta[pc.sec_tables + uint(s) * pc.max_blocks + logical / pc.block_size]);
            base = (block * pc.block_size + logical % pc.block_size) * pc.row_words + kv_head * head_words;
            for (uint h = 0u; h < HG; h++) sc[h] = 0.0;
            for (uint d2 = 0u; d2 < HEAD_DIM / 2u; d2++) {
                vec2 k = KV_PAIR(kc, base, d2, KV_F16);
                for (uint h = 0u; h < HG; h++)
                    sc[h] += q_sh[h * HEAD_DIM + 2u * d2] * k.x + q_sh[h * HEAD_DIM + 2u * d2 + 1u] * k.y;
            }
            if ((HEAD_DIM & 1u) != 0u) {   // odd head dims exist only for fp32
                float k = KV_ELEMENT(kc, base, HEAD_DIM - 1u, KV_F16);
                for (uint h = 0u; h < HG; h++) sc[h] += q_sh[h * HEAD_DIM + HEAD_DIM - 1u] * k;
            }
        }
        // Chunk max and sum per head: subgroup reductions, then one shared-memory pass over the subgroups'
        // partials (3 barriers a chunk; correct for any subgroup size).
        base_sh[tid] = base;
        for (uint h = 0u; h < HG; h++) {
            float v = subgroupMax(sc[h]);
            if (subgroupElect()) max_sh[h * WG + gl_SubgroupID] = v;
        }
        barrier();
        for (uint h = 0u; h < HG; h++) {
            float chunk_max = NEG_INF;
            for (uint g = 0u; g < gl_NumSubgroups; g++) chunk_max = max(chunk_max, max_sh[h * WG + g]);
            float m_new = max(m[h], chunk_max);
            // Before any visible slot the accumulators are zero: scale them by 0, never by exp(-inf + inf).
            alpha[h] = m[h] == NEG_INF ? 0.0 : exp(m[h] - m_new);
            sc[h] = valid ? exp(sc[h] - m_new) : 0.0;
            m[h] = m_new;
            if (tid == 0u) alpha_sh[h] = alpha[h];
            p_sh[h * WG + tid] = sc[h];
            float v = subgroupAdd(sc[h]);
            if (subgroupElect()) sum_sh[h * WG + gl_SubgroupID] = v;
        }
        barrier();
        for (uint h = 0u; h < HG; h++) {
            float chunk_sum = 0.0;
            for (uint g = 0u; g < gl_NumSubgroups; g++) chunk_sum += sum_sh[h * WG + g];
            l[h] = l[h] * alpha[h] + chunk_sum;
        }

        uint count = min(WG, key_end - c);
        if ((HEAD_DIM & 1u) == 0u) {
            // Threads over (head, element pair): one fp16 word or two adjacent fp32 words per slot, coalesced.
            for (uint e2 = tid; e2 < HG * HEAD_DIM / 2u; e2 += WG) {
                uint h = e2 / (HEAD_DIM / 2u), d2 = e2 - h * (HEAD_DIM / 2u);
                vec2 a = vec2(acc_sh[2u * e2], acc_sh[2u * e2 + 1u]) * alpha_sh[h];
                for (uint k = 0u; k < count; k++)
                    a += p_sh[h * WG + k] * KV_PAIR(vc, base_sh[k], d2, KV_F16);
                acc_sh[2u * e2] = a.x;
                acc_sh[2u * e2 + 1u] = a.y;
            }
        } else {
            for (uint e = tid; e < HG * HEAD_DIM; e += WG) {
                uint h = e / HEAD_DIM, d = e - h * HEAD_DIM;
                float a = acc_sh[e] * alpha_sh[h];
                for (uint k = 0u; k < count; k++)
                    a += p_sh[h * WG + k] * KV_ELEMENT(vc, base_sh[k], d, KV_F16);
                acc_sh[e] = a;
            }
        }
        barrier();   // before the next chunk overwrites p_sh, base_sh, alpha_sh, max_sh and sum_sh
    }

    if (pc.splits > 1u) {
        uint row = local_token * pc.num_heads + h0;   // partial of head h0 + h at ((row + h) * splits + split) * (HEAD_DIM + 2)
        for (uint e = tid; e < HG * HEAD_DIM; e += WG) {
            uint h = e / HEAD_DIM;
            part[((row + h) * pc.splits + split) * (HEAD_DIM + 2u) + e - h * HEAD_DIM] = acc_sh[e];
        }
        if (tid == 0u)
            for (uint h = 0u; h < HG; h++) {
                uint at = ((row + h) * pc.splits + split) * (HEAD_DIM + 2u) + HEAD_DIM;
                part[at] = m[h];
                part[at + 1u] = l[h];
            }
        return;
    }
    if (tid == 0u)
        for (uint h = 0u; h < HG; h++) alpha_sh[h] = l[h] > 0.0 ? 1.0 / l[h] : 0.0;
    barrier();
    uint o_base = pc.o_shift + (local_token * pc.num_heads + h0) * HEAD_DIM;
    for (uint e = tid; e < HG * HEAD_DIM; e += WG)
        o[o_base + e] = acc_sh[e] * alpha_sh[e / HEAD_DIM];
}
