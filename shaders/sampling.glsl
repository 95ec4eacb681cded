// Shared code of sample.comp and verify.comp: the SamplingParams mirror, workgroup reductions, the row checks,
// the warp (temperature -> top-k -> top-p, thresholds found exactly: radix select for top-k, bisection over the
// float bit patterns for top-p) and the exponential race. Mirrors engine/Cpu/CpuWarp.cs.
//
// The including shader declares its buffers and, before including this file,
//   float row_logit(uint src, uint i)
// returning element i (an index into the binding, shift included) of logit source src (0 = target/logits,
// 1 = draft). All functions here are called in uniform control flow by the whole workgroup, whose size must be a
// power of two.
#ifndef SAMPLING_GLSL
#define SAMPLING_GLSL

#include "philox.glsl"

struct SamplingParams {   // engine/Kernels/SamplingParams.cs, 32 bytes
    float temperature;
    int top_k;
    float top_p;
    uint seed_lo;
    uint seed_hi;
    uint sample_id;
    int position;
    uint stream;
};

// Row status codes, as KernelValidation.RowOk / RowNotFinite / RowNoFiniteLogit.
const uint ROW_OK = 0u;
const uint ROW_NOT_FINITE = 1u;
const uint ROW_NO_FINITE_LOGIT = 2u;

#define NEG_INF uintBitsToFloat(0xFF800000u)
const uint NO_INDEX = 0xFFFFFFFFu;

// Sized for the largest workgroup the host uses (VulkanBackend.SamplingWorkgroupSize).
const uint MAX_WORKGROUP = 256u;
shared float red_f[MAX_WORKGROUP];
shared uint red_u[MAX_WORKGROUP];
shared uint radix_hist[256];
shared uint radix_state[2];

void sync() {
    memoryBarrierShared();
    memoryBarrierBuffer();
    barrier();
}

float wg_sum(float v) {
    uint t = gl_LocalInvocationID.x;
    red_f[t] = v;
    sync();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (t < s) red_f[t] += red_f[t + s];
        sync();
    }
    float r = red_f[0];
    sync();
    return r;
}

float wg_max(float v) {
    uint t = gl_LocalInvocationID.x;
    red_f[t] = v;
    sync();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (t < s) red_f[t] = max(red_f[t], red_f[t + s]);
        sync();
    }
    float r = red_f[0];
    sync();
    return r;
}

uint wg_max_u(uint v) {
    uint t = gl_LocalInvocationID.x;
    red_u[t] = v;
    sync();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (t < s) red_u[t] = max(red_u[t], red_u[t + s]);
        sync();
    }
    uint r = red_u[0];
    sync();
    return r;
}

// Argmax of (v, i) pairs: larger v wins, the lower index on ties.
void wg_argmax(inout float v, inout uint i) {
    uint t = gl_LocalInvocationID.x;
    red_f[t] = v;
    red_u[t] = i;
    sync();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (t < s) {
            float ov = red_f[t + s];
            uint oi = red_u[t + s];
            if (ov > red_f[t] || (ov == red_f[t] && oi < red_u[t])) {
                red_f[t] = ov;
                red_u[t] = oi;
            }
        }
        sync();
    }
    v = red_f[0];
    i = red_u[0];
    sync();
}

// NaN or +Inf: exponent all ones, and either a mantissa or the positive sign.
bool is_nan_or_pos_inf(float x) {
    uint b = floatBitsToUint(x);
    return (b & 0x7F800000u) == 0x7F800000u && b != 0xFF800000u;
}

// One pass over a row: its max (over finite values and -Inf), the first index of the max, and its status.
void row_scan(uint src, uint base, uint V, out float row_max, out uint row_argmax, out uint status) {
    float best = NEG_INF;
    uint best_i = NO_INDEX;
    uint bad = 0u;
    for (uint i = gl_LocalInvocationID.x; i < V; i += gl_WorkGroupSize.x) {
        float x = row_logit(src, base + i);
        if (is_nan_or_pos_inf(x)) bad = 1u;
        else if (x > best) { best = x; best_i = i; }
    }
    bad = wg_max_u(bad);
    wg_argmax(best, best_i);
    row_max = best;
    row_argmax = best_i;
    status = bad != 0u ? ROW_NOT_FINITE : (best == NEG_INF ? ROW_NO_FINITE_LOGIT : ROW_OK);
}

float shifted_exp(float x, float mx, float inv_t) {
    return x == NEG_INF ? 0.0 : exp((x - mx) * inv_t);
}

// sum of exp((l - max) * inv_t) over the row: the log_softmax normaliser.
float row_exp_sum(uint src, uint base, uint V, float mx, float inv_t) {
    float s = 0.0;
    for (uint i = gl_LocalInvocationID.x; i < V; i += gl_WorkGroupSize.x)
        s += shifted_exp(row_logit(src, base + i), mx, inv_t);
    return wg_sum(s);
}

// Order-preserving map of a non-NaN float to uint, and back.
uint logit_key(float f) {
    uint b = floatBitsToUint(f);
    return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

float key_logit(uint k) {
    return uintBitsToFloat((k & 0x80000000u) != 0u ? (k & 0x7FFFFFFFu) : ~k);
}

// The k-th largest logit of the row (with multiplicity): radix select, 8 bits per pass, shared histogram.
float topk_threshold(uint src, uint base, uint V, uint k) {
    uint t = gl_LocalInvocationID.x;
    uint prefix = 0u;
    uint remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (uint b = t; b < 256u; b += gl_WorkGroupSize.x) radix_hist[b] = 0u;
        sync();
        uint high_mask = shift == 24 ? 0u : (0xFFFFFFFFu << uint(shift + 8));
        for (uint i = t; i < V; i += gl_WorkGroupSize.x) {
            uint key = logit_key(row_logit(src, base + i));
            if ((key & high_mask) == prefix) atomicAdd(radix_hist[(key >> uint(shift)) & 255u], 1u);
        }
        sync();
        if (t == 0u) {
            int b = 255;
            for (; b > 0; --b) {
                if (radix_hist[b] >= remaining) break;
                remaining -= radix_hist[b];
            }
            radix_state[0] = prefix | (uint(b) << uint(shift));
            radix_state[1] = remaining;
        }
        sync();
        prefix = radix_state[0];
        remaining = radix_state[1];
        sync();
    }
    return key_logit(prefix);
}

// A warped row: weight(i) = l_i >= thr_k ? exp((l_i - mx) * inv_t) : 0, then 0 below tau (top-p).
struct Warp {
    float mx;
    float inv_t;
    float thr_k;
    float tau;
};

float warp_weight(uint src, uint base, Warp w, uint i) {
    float x = row_logit(src, base + i);
    if (x < w.thr_k) return 0.0;
    float e = shifted_exp(x, w.mx, w.inv_t);
    return e < w.tau ? 0.0 : e;
}

float warp_mass(uint src, uint base, uint V, Warp w) {
    float s = 0.0;
    for (uint i = gl_LocalInvocationID.x; i < V; i += gl_WorkGroupSize.x) s += warp_weight(src, base, w, i);
    return wg_sum(s);
}

// Builds the warp of a non-greedy row with max mx; returns it with its kept mass.
Warp make_warp(uint src, uint base, uint V, float mx, SamplingParams p, out float mass) {
    Warp w;
    w.mx = mx;
    w.inv_t = 1.0 / p.temperature;
    w.thr_k = NEG_INF;
    w.tau = 0.0;
    if (p.top_k > 0 && uint(p.top_k) < V) w.thr_k = topk_threshold(src, base, V, uint(p.top_k));
    mass = warp_mass(src, base, V, w);
    if (p.top_p < 1.0) {
        // tau = the largest weight with mass(weight >= tau) >= top_p * mass, bit by bit (weights are >= 0).
        float target = p.top_p * mass;
        uint tau_bits = 0u;
        for (int bit = 30; bit >= 0; --bit) {
            uint cand = tau_bits | (1u << uint(bit));
            float m = 0.0;
            for (uint i = gl_LocalInvocationID.x; i < V; i += gl_WorkGroupSize.x) {
                float x = warp_weight(src, base, w, i);
                if (floatBitsToUint(x) >= cand) m += x;
            }
            if (wg_sum(m) >= target) tau_bits = cand;
        }
        w.tau = uintBitsToFloat(tau_bits);
        mass = warp_mass(src, base, V, w);
    }
    return w;
}

// E = -ln U for the Philox uniform U = (2m + 1) 2^-24 of x (philox_uniform). Near U = 1 a GPU's log has absolute, not relative,
// error, so there E = 2 atanh(d / (2 - d)) with the exact d = 1 - U, by its series (z <= 1/3: 1e-9 relative).
float exponential_draw(uint x) {
    uint odd = (x >> 9) * 2u + 1u;
    float u = ldexp(float(odd), -24);
    if (u <= 0.5) return -log(u);
    float d = ldexp(float(16777216u - odd), -24);
    float z = d / (2.0 - d);
    float z2 = z * z;
    float s = 1.0 / 17.0;
    s = s * z2 + 1.0 / 15.0;
    s = s * z2 + 1.0 / 13.0;
    s = s * z2 + 1.0 / 11.0;
    s = s * z2 + 1.0 / 9.0;
    s = s * z2 + 1.0 / 7.0;
    s = s * z2 + 1.0 / 5.0;
    s = s * z2 + 1.0 / 3.0;
    s = s * z2 + 1.0;
    return 2.0 * z * s;
}

// This thread's contribution to the race: score of weight w at index i.
float race_score(float w, SamplingParams p, int position, uint stream, uint i) {
    return w / exponential_draw(philox(uint(position), p.sample_id, stream, i, p.seed_lo, p.seed_hi));
}

#endif
