// Reading one layer's paged K/V cache words (see KvLayout): fp32 is a float's bits per word; fp16 packs two
// elements per word, the even element in the low half (unpackHalf2x16(w).x). `base` is the word index of
// element 0 of a (slot, KV head) row; `f16` is a compile-time constant so each pipeline keeps one branch.
#ifndef ATTENTION_KV_GLSL
#define ATTENTION_KV_GLSL

// Elements (2i, 2i + 1) of the row.
#define KV_PAIR(cache, base, i, f16) \
    ((f16) ? unpackHalf2x16(cache[(base) + (i)]) \
           : vec2(uintBitsToFloat(cache[(base) + 2u * (i)]), uintBitsToFloat(cache[(base) + 2u * (i) + 1u])))

// Element e of the row.
#define KV_ELEMENT(cache, base, e, f16) \
    ((f16) ? unpackHalf2x16(cache[(base) + ((e) >> 1u)])[(e) & 1u] : uintBitsToFloat(cache[(base) + (e)]))

// Words of one KV head's row of head_dim elements.
#define KV_HEAD_WORDS(head_dim, f16) ((f16) ? (head_dim) / 2u : (head_dim))

#endif
