#version 450
// Paged attention over one layer's KV cache, causal or tree-masked, grouped-query.
// One workgroup per (tile of up to TQ query tokens of one sample, HG query heads of one KV group): its
// ROWS = TQ·HG (token, head) rows share every K and V row it reads — across the GQA group and across the tokens
// of a prefill or a draft tree, which all see the same committed context. Keys are walked in chunks of WG slots
// with an online (running-max) softmax in fp32: one thread scores one slot for all rows (a row that does not
// see the slot gets −inf), subgroup + shared-memory reductions give each row's chunk max and sum, then threads
// over (row, element pair) rescale and accumulate the chunk's V rows. A row that sees no slot writes zeros.
// Long key ranges are split over grid z (flash-decoding): each split writes its unnormalised partial
// (Σ p·v, running max m, Σ p) and attention_combine.comp merges them. Besides parallelism for long contexts the
// split bounds the work of one invocation: llvmpipe (lavapipe) silently ends an invocation after 65535 loop
// iterations in total (its guard against infinite loops), so the host sizes splits to stay well under that.
#include "common.glsl"
#include "attention_kv.glsl"

layout(constant_id = 1) const uint HEAD_DIM = 128;
layout(constant_id = 2) const uint HG = 1;        // query heads per workgroup (divides the GQA group)
layout(constant_id = 3) const bool KV_F16 = false;
layout(constant_id = 4) const uint TQ = 1;        // query tokens per workgroup; HG * TQ <= MAX_ROWS
const uint MAX_ROWS = 8;
#define ROWS (HG * TQ)
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
// First (global) token of each tile of this dispatch; a tile never crosses a sample or the dispatch's range.
layout(std430, set = 0, binding = 6) readonly buffer Tiles { int tiles[]; };

layout(push_constant) uniform Push {
    uint token_base;    // global index of this dispatch's first token
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
    uint token_end;      // global index one past this dispatch's last token
} pc;

#define NEG_INF uintBitsToFloat(0xff800000u)

shared float q_sh[ROWS * HEAD_DIM];   // scaled queries, row r = tq * HG + head
shared float acc_sh[ROWS * HEAD_DIM]; // running Σ p·v, rescaled at each new max
shared float p_sh[ROWS * WG];         // chunk probabilities exp(s - m)
shared float max_sh[ROWS * WG];       // per-subgroup chunk maxima (gl_NumSubgroups <= WG)
shared float sum_sh[ROWS * WG];       // per-subgroup chunk sums
shared uint base_sh[WG];              // word index of each chunk slot's KV-head row
shared float alpha_sh[ROWS];          // per-row rescale of this chunk, then 1 / l at the end

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint t0 = uint(tiles[gl_WorkGroupID.x]);
    uint h0 = gl_WorkGroupID.y * HG;
    uint kv_head = h0 / pc.group_size;

    int s = meta[pc.sec_sample + t0];
    uint first = uint(meta[pc.sec_offsets + s]);
    uint n = uint(meta[pc.sec_offsets + s + 1]) - first;
    uint context = uint(meta[pc.sec_contexts + s]);
    uint i0 = t0 - first;                                       // local index of the tile's first token
    uint tile_tokens = min(TQ, min(first + n, pc.token_end) - t0);
    uint num_keys = pc.causal != 0u ? context + i0 + tile_tokens : context + n;
    uint head_words = KV_HEAD_WORDS(HEAD_DIM, KV_F16);

    for (uint e = tid; e < ROWS * HEAD_DIM; e += WG) {
        uint r = e / HEAD_DIM, tq = r / HG;
        uint row = (t0 + tq - pc.token_base) * pc.num_heads + h0 + r - tq * HG;
        q_sh[e] = tq < tile_tokens ? q[pc.q_shift + row * HEAD_DIM + e - r * HEAD_DIM] * pc.scale : 0.0;
        acc_sh[e] = 0.0;
    }
    float m[MAX_ROWS], l[MAX_ROWS], alpha[MAX_ROWS], sc[MAX_ROWS];   // indexed by unrolled loops only
    for (uint r = 0u; r < ROWS; r++) { m[r] = NEG_INF; l[r] = 0.0; }
    barrier();

    uint split = gl_WorkGroupID.z;
    uint key_begin = split * pc.keys_per_split;
    uint key_end = min(num_keys, key_begin + pc.keys_per_split);
    for (uint c = key_begin; c < key_end; c += WG) {
        uint logical = c + tid;
        // Bit tq: token t0 + tq sees this slot.
        uint sees = 0u;
        if (logical < key_end) {
            for (uint tq = 0u; tq < TQ; tq++) {
                bool v = tq < tile_tokens;
                if (v && logical >= context) {
                    uint j = logical - context;
                    v = pc.causal != 0u ? j <= i0 + tq
                        : ((uint(meta[pc.sec_mask + (t0 + tq) * pc.mask_words + j / 32u]) >> (j % 32u)) & 1u) != 0u;
                }
                if (v) sees |= 1u << tq;
            }
        }
        uint base = 0u;
        for (uint r = 0u; r < ROWS; r++) sc[r] = 0.0;
        if (sees != 0u) {
            uint block = uint(meta[pc.sec_tables + uint(s) * pc.max_blocks + logical / pc.block_size]);
            base = (block * pc.block_size + logical % pc.block_size) * pc.row_words + kv_head * head_words;
            for (uint d2 = 0u; d2 < HEAD_DIM / 2u; d2++) {
                vec2 k = KV_PAIR(kc, base, d2, KV_F16);
                for (uint r = 0u; r < ROWS; r++)
                    sc[r] += q_sh[r * HEAD_DIM + 2u * d2] * k.x + q_sh[r * HEAD_DIM + 2u * d2 + 1u] * k.y;
            }
            if ((HEAD_DIM & 1u) != 0u) {   // odd head dims exist only for fp32
                float k = KV_ELEMENT(kc, base, HEAD_DIM - 1u, KV_F16);
                for (uint r = 0u; r < ROWS; r++) sc[r] += q_sh[r * HEAD_DIM + HEAD_DIM - 1u] * k;
            }
        }
        for (uint r = 0u; r < ROWS; r++)
            if (((sees >> (r / HG)) & 1u) == 0u) sc[r] = NEG_INF;

        // Chunk max and sum per row: subgroup reductions, then one shared-memory pass over the subgroups'
        // partials (3 barriers a chunk; correct for any subgroup size).
        base_sh[tid] = base;
        for (uint r = 0u; r < ROWS; r++) {
            float v = subgroupMax(sc[r]);
            if (subgroupElect()) max_sh[r * WG + gl_SubgroupID] = v;
        }
        barrier();
        for (uint r = 0u; r < ROWS; r++) {
            float chunk_max = NEG_INF;
            for (uint g = 0u; g < gl_NumSubgroups; g++) chunk_max = max(chunk_max, max_sh[r * WG + g]);
            float m_new = max(m[r], chunk_max);
            // Before any visible slot the accumulators are zero: scale them by 0, never by exp(-inf + inf).
            alpha[r] = m[r] == NEG_INF ? 0.0 : exp(m[r] - m_new);
            sc[r] = sc[r] == NEG_INF ? 0.0 : exp(sc[r] - m_new);
            m[r] = m_new;
            if (tid == 0u) alpha_sh[r] = alpha[r];
            p_sh[r * WG + tid] = sc[r];
            float v = subgroupAdd(sc[r]);
            if (subgroupElect()) sum_sh[r * WG + gl_SubgroupID] = v;
        }
        barrier();
        for (uint r = 0u; r < ROWS; r++) {
            float chunk_sum = 0.0;
            for (uint g = 0u; g < gl_NumSubgroups; g++) chunk_sum += sum_sh[r * WG + g];
            l[r] = l[r] * alpha[r] + chunk_sum;
        }

        uint count = min(WG, key_end - c);
        if ((HEAD_DIM & 1u) == 0u) {
            // Threads over (row, element pair): one fp16 word or two adjacent fp32 words per slot, coalesced.
            for (uint e2 = tid; e2 < ROWS * HEAD_DIM / 2u; e2 += WG) {
                uint r = e2 / (HEAD_DIM / 2u), d2 = e2 - r * (HEAD_DIM / 2u);
                vec2 a = vec2(acc_sh[2u * e2], acc_sh[2u * e2 + 1u]) * alpha_sh[r];
                for (uint k = 0u; k < count; k++)
                    a += p_sh[r * WG + k] * KV_PAIR(vc, base_sh[k], d2, KV_F16);
                acc_sh[2u * e2] = a.x;
                acc_sh[2u * e2 + 1u] = a.y;
            }
        } else {
            for (uint e = tid; e < ROWS * HEAD_DIM; e += WG) {
                uint r = e / HEAD_DIM, d = e - r * HEAD_DIM;
                float a = acc_sh[e] * alpha_sh[r];
                for (uint k = 0u; k < count; k++)
                    a += p_sh[r * WG + k] * KV_ELEMENT(vc, base_sh[k], d, KV_F16);
                acc_sh[e] = a;
            }
        }
        barrier();   // before the next chunk overwrites p_sh, base_sh, alpha_sh, max_sh and sum_sh
    }

    if (pc.splits > 1u) {
        for (uint e = tid; e < ROWS * HEAD_DIM; e += WG) {
            uint r = e / HEAD_DIM, tq = r / HG;
            uint row = (t0 + tq - pc.token_base) * pc.num_heads + h0 + r - tq * HG;
            if (tq < tile_tokens)
                part[(row * pc.splits + split) * (HEAD_DIM + 2u) + e - r * HEAD_DIM] = acc_sh[e];
        }
        if (tid == 0u)
            for (uint r = 0u; r < ROWS; r++) {
                uint tq = r / HG;
                uint row = (t0 + tq - pc.token_base) * pc.num_heads + h0 + r - tq * HG;
                if (tq < tile_tokens) {
                    uint at = (row * pc.splits + split) * (HEAD_DIM + 2u) + HEAD_DIM;
                    part[at] = m[r];
                    part[at + 1u] = l[r];
                }
            }
        return;
    }
    if (tid == 0u)
        for (uint r = 0u; r < ROWS; r++) alpha_sh[r] = l[r] > 0.0 ? 1.0 / l[r] : 0.0;
    barrier();
    for (uint e = tid; e < ROWS * HEAD_DIM; e += WG) {
        uint r = e / HEAD_DIM, tq = r / HG;
        uint row = (t0 + tq - pc.token_base) * pc.num_heads + h0 + r - tq * HG;
        if (tq < tile_tokens)
            o[pc.o_shift + row * HEAD_DIM + e - r * HEAD_DIM] = acc_sh[e] * alpha_sh[r];
    }
}
