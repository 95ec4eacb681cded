#version 450
// Merges the per-split partials of attention.comp (flash-decoding): for each (token, head),
// M = max_z m_z, w_z = exp(m_z − M), out = Σ_z w_z·acc_z / Σ_z w_z·l_z. One thread per output element,
// grid-stride over the rows of this dispatch. A row whose splits all saw nothing (M = −inf) gets zeros.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Partial { float part[]; };   // [rows, splits, head_dim + 2]
layout(std430, set = 0, binding = 1) writeonly buffer Output { float o[]; };      // [rows, head_dim]

layout(push_constant) uniform Push {
    uint elements;   // rows * head_dim
    uint head_dim;
    uint splits;
    uint o_shift;    // element shift of the output binding
} pc;

#define NEG_INF uintBitsToFloat(0xff800000u)

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint width = pc.head_dim + 2u;
    for (uint e = gl_GlobalInvocationID.x; e < pc.elements; e += stride) {
        uint row = e / pc.head_dim, d = e - row * pc.head_dim;
        uint base = row * pc.splits * width;
        float big = NEG_INF;
        for (uint z = 0u; z < pc.splits; z++) big = max(big, part[base + z * width + pc.head_dim]);
        float num = 0.0, den = 0.0;
        if (big != NEG_INF)
            for (uint z = 0u; z < pc.splits; z++) {
                float m = part[base + z * width + pc.head_dim];
                float w = m == NEG_INF ? 0.0 : exp(m - big);
                num += w * part[base + z * width + d];
                den += w * part[base + z * width + pc.head_dim + 1u];
            }
        o[pc.o_shift + e] = den > 0.0 ? num / den : 0.0;
    }
}
