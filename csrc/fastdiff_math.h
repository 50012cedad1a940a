// fastdiff's per-element math, shared by the C++ CPU kernels and the CUDA kernels.
//
// Host/device inline functions on float and uint32 only: no torch, no libm calls in the hot paths (log, sin
// and cos are branch-free polynomials here, so CPU loops vectorize and the CPU and CUDA builds compute the
// same values from the same operations). Formulas are those of fastdiff/reference/ and fastdiff/rng.py, specified
// in docs/formulas.md#fused-ops and docs/formulas.md#random-numbers.
#pragma once

#include <math.h>
#include <stdint.h>

#include "precond_codes.h"

#if defined(__CUDACC__)
#define FD_HD __host__ __device__ __forceinline__
#define FD_UNROLL _Pragma("unroll")
#else
#define FD_HD inline __attribute__((always_inline))
#define FD_UNROLL _Pragma("GCC unroll 16")  // a rolled Philox loop is control flow that stops loop vectorization
#endif

namespace fastdiff {

// ---------------------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al. 2011), the stream of fastdiff/rng.py (docs/formulas.md#philox4x32-10):
//   key = (seed mod 2^32, seed div 2^32), counter = (block mod 2^32, block div 2^32, offset mod 2^32, offset div 2^32)
// ---------------------------------------------------------------------------------------------------------
struct Words {
  uint32_t w0, w1, w2, w3;
};

FD_HD Words philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  FD_UNROLL
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;  // the key schedule (the bump after the last round is never used)
    k1 += 0xBB67AE85u;
  }
  return Words{c0, c1, c2, c3};
}

FD_HD Words stream_words(uint64_t seed, uint64_t block, uint64_t offset) {
  return philox4x32_10((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)offset, (uint32_t)(offset >> 32),
                       (uint32_t)seed, (uint32_t)(seed >> 32));
}

// ---------------------------------------------------------------------------------------------------------
// Branch-free float32 log and sin/cos for the arguments the normal transform produces. Accurate to about
// one ulp; the tests compare them with the reference (torch's log/sin/cos) over the whole stream.
// docs/formulas.md#branch-free-log-and-sincos
// ---------------------------------------------------------------------------------------------------------
FD_HD float bits_to_float(uint32_t u) {
  union {
    uint32_t u;
    float f;
  } v;
  v.u = u;
  return v.f;
}

FD_HD uint32_t float_to_bits(float f) {
  union {
    uint32_t u;
    float f;
  } v;
  v.f = f;
  return v.u;
}

// ln(u) for u a positive normal float: u = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1).
FD_HD float log_positive(float u) {
  const uint32_t bits = float_to_bits(u);
  int e = (int)((bits >> 23) & 0xFF) - 127;
  float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F800000u);  // in [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? m * 0.5f : m;
  e = high ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);  // |s| <= 0.1716
  const float s2 = s * s;
  // 2 atanh(s) = 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9); the next term is below 2^-28 relative.
  const float poly = 1.0f + s2 * (0.33333333f + s2 * (0.2f + s2 * (0.14285715f + s2 * 0.11111111f)));
  const float ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;  // ln 2 in two parts; e * ln2_hi is exact
  const float fe = (float)e;
  return (fe * ln2_hi + 2.0f * s * poly) + fe * ln2_lo;
}

// sin and cos of theta in [0, 2 pi]: reduce by quadrant q = round(theta / (pi/2)) with pi/2 in three parts,
// then Taylor polynomials on |r| <= pi/4 (truncation below 4e-9 relative).
FD_HD void sincos_small(float theta, float* sin_out, float* cos_out) {
  const float q = (float)(int)(theta * 0.63661977f + 0.5f);  // theta >= 0: round to nearest
  const float pio2_1 = 1.5703125f, pio2_2 = 4.837512969970703125e-4f, pio2_3 = 7.54978995489188216e-8f;  // exact products for q <= 4
  const float r = ((theta - q * pio2_1) - q * pio2_2) - q * pio2_3;
  const float r2 = r * r;
  const float s = r + r * r2 * (-0.16666667f + r2 * (8.3333333e-03f + r2 * (-1.9841270e-04f + r2 * 2.7557319e-06f)));
  const float c = 1.0f + r2 * (-0.5f + r2 * (4.1666668e-02f + r2 * (-1.3888889e-03f + r2 * 2.4801587e-05f)));
  const int quadrant = ((int)q) & 3;  // (sin, cos) = (s, c), (c, -s), (-s, -c), (-c, s)
  const float sin_abs = (quadrant & 1) ? c : s;
  const float cos_abs = (quadrant & 1) ? s : c;
  *sin_out = (quadrant & 2) ? -sin_abs : sin_abs;
  *cos_out = ((quadrant + 1) & 2) ? -cos_abs : cos_abs;
}

// Two standard normals from two uint32 words, as fastdiff/rng.py defines them (docs/formulas.md#box-muller-transform):
//   u1 = ((w_a >> 8) + 1) 2^-24, u2 = (w_b >> 8) 2^-24, r = sqrt(-2 ln u1), theta = fp32(2 pi) u2.
FD_HD void box_muller(uint32_t w_a, uint32_t w_b, float* n_a, float* n_b) {
  const float u1 = (float)((w_a >> 8) + 1u) * 5.9604644775390625e-08f;
  const float u2 = (float)(w_b >> 8) * 5.9604644775390625e-08f;
  const float r = sqrtf(-2.0f * log_positive(u1));
  float s, c;
  sincos_small(6.2831854820251465f * u2, &s, &c);
  *n_a = r * c;
  *n_b = r * s;
}

// The four normals of one Philox block (lanes 0..3).
FD_HD void block_normals(uint64_t seed, uint64_t block, uint64_t offset, float out[4]) {
  const Words w = stream_words(seed, block, offset);
  box_muller(w.w0, w.w1, &out[0], &out[1]);
  box_muller(w.w2, w.w3, &out[2], &out[3]);
}

// ---------------------------------------------------------------------------------------------------------
// The ops' per-element formulas (fastdiff/reference/<op>.py), float32.
// ---------------------------------------------------------------------------------------------------------
// skip_mix's `kind`: PrecondKind of precond_codes.h (fastdiff/_codes.py); iDDPM uses kVP's skip coefficients.
FD_HD void skip_coefficients(int kind, float sigma, float sigma_data, float* c_skip, float* c_out) {
  if (kind == kEDM) {
    const float denom = sigma * sigma + sigma_data * sigma_data;
    *c_skip = sigma_data * sigma_data / denom;
    *c_out = sigma * sigma_data / sqrtf(denom);
  } else {
    *c_skip = 1.0f;
    *c_out = kind == kVP ? -sigma : sigma;
  }
}

FD_HD float skip_mix(float x, float F, float c_skip, float c_out) { return c_skip * x + c_out * F; }

FD_HD float churn(float x, float noise_std, float eps) { return x + noise_std * eps; }

FD_HD float euler_step(float x_hat, float denoised, float t_hat, float t_next) {
  const float d_cur = (x_hat - denoised) / t_hat;
  return x_hat + (t_next - t_hat) * d_cur;
}

FD_HD float heun_step(float x_hat, float denoised, float denoised_next, float t_hat, float t_next) {
  const float h = t_next - t_hat;
  const float d_cur = (x_hat - denoised) / t_hat;
  const float x_next = x_hat + h * d_cur;  // recomputed, never stored
  const float d_prime = (x_next - denoised_next) / t_next;
  return x_hat + h * (0.5f * d_cur + 0.5f * d_prime);
}

// DPM-Solver++(2M)'s step (fastdiff/ops/reference/multistep_step.py, docs/formulas.md#multistep-step): the denoised
// extrapolated with the previous one, D' = D + c (D - D_prev), then the Euler step D' + (t_next / t) (x - D').
// The ratio t_next / t is per sample: loops compute it once with multistep_ratio and pass it in.
FD_HD float multistep_ratio(float t, float t_next) { return t_next / t; }

FD_HD float multistep_step(float x, float denoised, float denoised_prev, float c, float ratio) {
  const float d_ext = denoised + c * (denoised - denoised_prev);
  return d_ext + ratio * (x - d_ext);
}

// A solver's update as one affine combination (fastdiff/ops/reference/combine.py, docs/formulas.md#combine):
// out = a x + w0 h0 + w1 h1 + w2 h2 + w3 h3 + n z, accumulated as acc = combine_first(a, x), then
// acc = combine_term(acc, w_k, h_k) for each present h_k in order k = 0..3, then acc = combine_term(acc, n, z).
// An absent term is skipped, never added as 0 (0 * inf is NaN, and -0 + 0 is +0): the callers choose the terms.
FD_HD float combine_first(float a, float x) { return a * x; }

FD_HD float combine_term(float acc, float w, float v) { return acc + w * v; }

// A denoising loss (fastdiff/reference/loss.py; docs/formulas.md#fused-loss-passes), with n the given noise or the
// stream's normal of the element.
// The network's input: c_in (y + sigma n).
FD_HD float loss_input(float y, float n, float sigma, float c_in) { return c_in * (y + sigma * n); }

// After the network: r = D - y with D = c_skip (y + sigma n) + c_out F; loss = weight r^2, dloss/dF = 2 weight c_out r.
// r is summed as c_skip (sigma n) + c_out F + (c_skip - 1) y, so that c_skip = 1 (VP, VE, DDPM) never subtracts y
// from y + sigma n: at small sigma that cancellation would cost the loss most of its float32 digits.
FD_HD void loss_error(float y, float F, float n, float sigma, float c_skip, float c_out, float weight, float* loss,
                      float* grad) {
  const float r = c_skip * (sigma * n) + c_out * F + (c_skip - 1.0f) * y;
  *loss = weight * (r * r);
  *grad = 2.0f * weight * c_out * r;  // the leading product is per sample: loops hoist it
}

}  // namespace fastdiff
