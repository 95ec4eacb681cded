// Weight matrices of the dense ops, fp32 or fp16 (specialization constant 1), [rows, in_dim] row-major as Hugging
// Face stores them. fp16 weights are read as packed words (unpackHalf2x16), so no 16-bit storage feature is needed.
// The including shader binds the weights at binding WEIGHT_BINDING.
#ifndef DENSE_WEIGHTS_GLSL
#define DENSE_WEIGHTS_GLSL

layout(constant_id = 1) const uint WEIGHT_F16 = 0;

layout(std430, set = 0, binding = WEIGHT_BINDING) readonly buffer W32 { float w32[]; };
layout(std430, set = 0, binding = WEIGHT_BINDING) readonly buffer W32x4 { vec4 w32x4[]; };
layout(std430, set = 0, binding = WEIGHT_BINDING) readonly buffer W16 { uint w16[]; };
layout(std430, set = 0, binding = WEIGHT_BINDING) readonly buffer W16x4 { uvec2 w16x4[]; };

// Element e of the binding.
float weight(uint e) {
    if (WEIGHT_F16 != 0u) {
        vec2 pair = unpackHalf2x16(w16[e >> 1]);
        return (e & 1u) == 0u ? pair.x : pair.y;
    }
    return w32[e];
}

// Elements 4c .. 4c + 3 of the binding (the caller checks that 4c is where it means to read).
vec4 weight4(uint c) {
    if (WEIGHT_F16 != 0u) {
        uvec2 q = w16x4[c];
        return vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
    }
    return w32x4[c];
}

#endif
