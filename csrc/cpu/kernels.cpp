// fastdiff's C++ CPU kernels (see kernels.h): OpenMP threads over contiguous ranges, loops the compiler vectorizes.
//
// Each hot loop is compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2) and the baseline, and the best one the CPU
// supports is picked at load time (GCC target_clones). The build uses -ffp-contract=off, so every variant
// computes the same float32 operations in the same order: results do not depend on the CPU.
#include "kernels.h"

#include <omp.h>

#include <algorithm>

#include "../fastdiff_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FD_CLONES
#endif
#define FD_INLINE inline __attribute__((always_inline))

namespace fastdiff {
namespace cpu {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Element types: float, IEEE half and bfloat16, read as float and stored rounding to nearest even. Both 16-bit
// conversions are branch-free integer and float operations, so the loops vectorize in every clone and build
// with any C++17 compiler (no _Float16).
// ---------------------------------------------------------------------------------------------------------
struct BFloat16 {
  uint16_t bits;
};
struct Float16 {
  uint16_t bits;
};

FD_INLINE float to_float(float v) { return v; }
FD_INLINE float to_float(BFloat16 v) { return bits_to_float((uint32_t)v.bits << 16); }
FD_INLINE float to_float(Float16 v) {
  const uint32_t sign = ((uint32_t)v.bits & 0x8000u) << 16, magnitude = (uint32_t)v.bits & 0x7FFFu;
  // Shifted into a float's fields, a half is off by 2^-112 in scale (subnormals included): multiply it back.
  const uint32_t finite = float_to_bits(bits_to_float(magnitude << 13) * 5.192296858534828e+33f);
  const uint32_t special = 0x7F800000u | ((magnitude & 0x3FFu) << 13);  // inf, NaN (payload kept)
  return bits_to_float(sign | (magnitude >= 0x7C00u ? special : finite));
}

template <class T>
FD_INLINE T from_float(float v);
template <>
FD_INLINE float from_float<float>(float v) { return v; }
template <>
FD_INLINE Float16 from_float<Float16>(float v) {
  const uint32_t bits = float_to_bits(v), sign = (bits >> 16) & 0x8000u, f = bits & 0x7FFFFFFFu;
  // |v| >= 65536: inf, or a quiet NaN.
  const uint32_t overflow = f > 0x7F800000u ? 0x7E00u : 0x7C00u;
  // |v| < 2^-14: a half subnormal; adding 0.5 (2^-1) lets the FPU round the 10 fraction bits to nearest even.
  const uint32_t subnormal = float_to_bits(bits_to_float(f) + 0.5f) - 0x3F000000u;
  // Otherwise: rebias the exponent and round to nearest even on the 13 dropped bits (a carry may reach inf).
  const uint32_t normal = (f + 0xC8000FFFu + ((f >> 13) & 1u)) >> 13;
  const uint32_t magnitude = f >= 0x47800000u ? overflow : (f < 0x38800000u ? subnormal : normal);
  return Float16{(uint16_t)(sign | magnitude)};
}
template <>
FD_INLINE BFloat16 from_float<BFloat16>(float v) {
  const uint32_t u = float_to_bits(v);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return BFloat16{(uint16_t)(nan ? ((u >> 16) | 0x40u) : rounded)};  // NaN stays a (quiet) NaN
}

FD_INLINE float value(Scalars s, int64_t b) { return s.ptr[s.per_sample ? b : 0]; }

// Run body(begin, end) over [0, items) on up to num_threads threads, in chunks aligned to 64 items.
template <class Body>
void parallel_for(int64_t items, int num_threads, const Body& body) {
  constexpr int64_t kMinItemsPerThread = 16384;  // below this a thread costs more than it saves
  const int64_t useful = std::max<int64_t>(1, items / kMinItemsPerThread);
  const int threads = (int)std::min<int64_t>(std::max(num_threads, 1), useful);
  if (threads <= 1) {
    if (items > 0) body(0, items);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t chunk = ((items + nt - 1) / nt + 63) / 64 * 64;
    const int64_t begin = std::min(items, t * chunk), end = std::min(items, begin + chunk);
    if (begin < end) body(begin, end);
  }
}

// The end of the run of items [i, end) that share sample b's per-step values (all of them when none is per sample).
FD_INLINE int64_t segment_end(int64_t i, int64_t end, int64_t per_sample, bool any_per_sample) {
  return any_per_sample ? std::min(end, (i / per_sample + 1) * per_sample) : end;
}

// ---------------------------------------------------------------------------------------------------------
// Loop bodies (inlined into the cloned entry points below).
// ---------------------------------------------------------------------------------------------------------
template <class TX, class TD>
FD_INLINE void euler_body(const TX* x_hat, const TD* denoised, TX* out, Scalars t_hat, Scalars t_next, int64_t P,
                          int64_t begin, int64_t end) {
  const bool per_sample = t_hat.per_sample || t_next.per_sample;
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / P, stop = segment_end(i, end, P, per_sample);
    const float th = value(t_hat, b), tn = value(t_next, b);
    for (int64_t j = i; j < stop; ++j) out[j] = from_float<TX>(::fastdiff::euler_step(to_float(x_hat[j]), to_float(denoised[j]), th, tn));
    i = stop;
  }
}

template <class TX, class TD>
FD_INLINE void heun_body(const TX* x_hat, const TD* denoised, const TD* denoised_next, TX* out, Scalars t_hat,
                         Scalars t_next, int64_t P, int64_t begin, int64_t end) {
  const bool per_sample = t_hat.per_sample || t_next.per_sample;
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / P, stop = segment_end(i, end, P, per_sample);
    const float th = value(t_hat, b), tn = value(t_next, b);
    for (int64_t j = i; j < stop; ++j)
      out[j] = from_float<TX>(::fastdiff::heun_step(to_float(x_hat[j]), to_float(denoised[j]), to_float(denoised_next[j]), th, tn));
    i = stop;
  }
}

template <class TX, class TD>
FD_INLINE void multistep_body(const TX* x, const TD* denoised, const TD* denoised_prev, TX* out, Scalars c, Scalars t,
                              Scalars t_next, int64_t P, int64_t begin, int64_t end) {
  const bool per_sample = c.per_sample || t.per_sample || t_next.per_sample;
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / P, stop = segment_end(i, end, P, per_sample);
    const float cb = value(c, b), ratio = multistep_ratio(value(t, b), value(t_next, b));
    for (int64_t j = i; j < stop; ++j)
      out[j] = from_float<TX>(::fastdiff::multistep_step(to_float(x[j]), to_float(denoised[j]), to_float(denoised_prev[j]), cb, ratio));
    i = stop;
  }
}

template <class TX, class TF>
FD_INLINE void skip_mix_body(const TX* x, const TF* F, float* out, Scalars sigma, int kind, float sigma_data, int64_t P,
                             int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / P, stop = segment_end(i, end, P, sigma.per_sample);
    float c_skip, c_out;
    skip_coefficients(kind, value(sigma, b), sigma_data, &c_skip, &c_out);
    for (int64_t j = i; j < stop; ++j) out[j] = ::fastdiff::skip_mix(to_float(x[j]), to_float(F[j]), c_skip, c_out);
    i = stop;
  }
}

// Noise over whole Philox blocks: items are groups of 4 elements (per_sample % 4 == 0), so group g is block
// g % groups_per_sample of sample g / groups_per_sample and covers elements 4g..4g+3.
// kInPlace (churn with out = x): x is read through `out` itself. Given two pointers, GCC vectorizes this loop behind
// a run-time test that their ranges do not overlap, so out == x ran the scalar copy of the Philox and Box-Muller
// math, about 8x slower; through one pointer it sees each element read before it is written at the same index and
// needs no test. Same operations, same bits.
template <class TX, bool kHasX, bool kInPlace>
FD_INLINE void noise_groups_body(const TX* x_in, TX* out, const int64_t* seeds, uint64_t offset, Scalars noise_std,
                                 int64_t groups_per_sample, int64_t begin, int64_t end) {
  const TX* x = kInPlace ? out : x_in;
  for (int64_t g = begin; g < end;) {
    const int64_t b = g / groups_per_sample, stop = std::min(end, (b + 1) * groups_per_sample);
    const uint64_t seed = (uint64_t)seeds[b];
    const float s = kHasX ? value(noise_std, b) : 0.0f;
    const int64_t first_block = g - b * groups_per_sample;
    for (int64_t j = g; j < stop; ++j) {
      float n[4];
      block_normals(seed, (uint64_t)(first_block + (j - g)), offset, n);
      for (int l = 0; l < 4; ++l) out[4 * j + l] = from_float<TX>(kHasX ? ::fastdiff::churn(to_float(x[4 * j + l]), s, n[l]) : n[l]);
    }
    g = stop;
  }
}

// Noise for any sample size: items are (sample, block) pairs; a sample's last block may be partial. This loop has
// control flow and is never vectorized, so writing over x costs nothing extra (kInPlace is unused).
template <class TX, bool kHasX, bool kInPlace>
FD_INLINE void noise_blocks_body(const TX* x, TX* out, const int64_t* seeds, uint64_t offset, Scalars noise_std,
                                 int64_t P, int64_t begin, int64_t end) {
  const int64_t blocks_per_sample = (P + 3) / 4;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / blocks_per_sample, block = item - b * blocks_per_sample;
    float n[4];
    block_normals((uint64_t)seeds[b], (uint64_t)block, offset, n);
    const int64_t first = b * P + 4 * block, lanes = std::min<int64_t>(4, P - 4 * block);
    const float s = kHasX ? value(noise_std, b) : 0.0f;
    for (int64_t l = 0; l < lanes; ++l) out[first + l] = from_float<TX>(kHasX ? ::fastdiff::churn(to_float(x[first + l]), s, n[l]) : n[l]);
  }
}

// The loss ops: an Op holds one op's tensors and per-sample coefficients and computes element i given its noise;
// the three bodies below feed it the given noise, or the stream's normals over whole blocks or (sample, block) pairs.
template <class TY>
struct LossInputOp {
  const TY* y;
  TY* out;
  Scalars sigma, c_in;
  struct Coefficients {
    float sigma, c_in;
  };
  FD_INLINE bool per_sample() const { return sigma.per_sample || c_in.per_sample; }
  FD_INLINE Coefficients at(int64_t b) const { return {value(sigma, b), value(c_in, b)}; }
  FD_INLINE void operator()(const Coefficients& k, int64_t i, float n) const {
    out[i] = from_float<TY>(::fastdiff::loss_input(to_float(y[i]), n, k.sigma, k.c_in));
  }
};

template <class TY, class TF>
struct LossErrorOp {
  const TY* y;
  const TF* F;
  float* loss;
  float* grad;
  Scalars sigma, c_skip, c_out, weight;
  struct Coefficients {
    float sigma, c_skip, c_out, weight;
  };
  FD_INLINE bool per_sample() const {
    return sigma.per_sample || c_skip.per_sample || c_out.per_sample || weight.per_sample;
  }
  FD_INLINE Coefficients at(int64_t b) const { return {value(sigma, b), value(c_skip, b), value(c_out, b), value(weight, b)}; }
  FD_INLINE void operator()(const Coefficients& k, int64_t i, float n) const {
    ::fastdiff::loss_error(to_float(y[i]), to_float(F[i]), n, k.sigma, k.c_skip, k.c_out, k.weight, &loss[i], &grad[i]);
  }
};

// Given noise (of type TN): items are elements, in runs that share a sample's coefficients.
template <class TN, class Op>
FD_INLINE void given_noise_body(Op op, Noise noise, int64_t P, int64_t begin, int64_t end) {
  const TN* n = (const TN*)noise.ptr;
  for (int64_t i = begin; i < end;) {
    const int64_t b = i / P, stop = segment_end(i, end, P, op.per_sample());
    const auto k = op.at(b);
    for (int64_t j = i; j < stop; ++j) op(k, j, to_float(n[j]));
    i = stop;
  }
}

// Drawn noise over whole Philox blocks (per_sample % 4 == 0): items are groups of 4 elements, as in noise_groups_body.
template <class Op>
FD_INLINE void drawn_groups_body(Op op, Noise noise, int64_t groups_per_sample, int64_t begin, int64_t end) {
  for (int64_t g = begin; g < end;) {
    const int64_t b = g / groups_per_sample, stop = std::min(end, (b + 1) * groups_per_sample);
    const uint64_t seed = (uint64_t)noise.seeds[b];
    const auto k = op.at(b);
    const int64_t first_block = g - b * groups_per_sample;
    for (int64_t j = g; j < stop; ++j) {
      float n[4];
      block_normals(seed, (uint64_t)(first_block + (j - g)), noise.offset, n);
      for (int l = 0; l < 4; ++l) op(k, 4 * j + l, n[l]);
    }
    g = stop;
  }
}

// Drawn noise for any sample size: items are (sample, block) pairs, as in noise_blocks_body.
template <class Op>
FD_INLINE void drawn_blocks_body(Op op, Noise noise, int64_t P, int64_t begin, int64_t end) {
  const int64_t blocks_per_sample = (P + 3) / 4;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / blocks_per_sample, block = item - b * blocks_per_sample;
    float n[4];
    block_normals((uint64_t)noise.seeds[b], (uint64_t)block, noise.offset, n);
    const int64_t first = b * P + 4 * block, lanes = std::min<int64_t>(4, P - 4 * block);
    const auto k = op.at(b);
    for (int64_t l = 0; l < lanes; ++l) op(k, first + l, n[l]);
  }
}

// combine runs over a chunk of elements of one sample in passes, each a loop over the chunk: acc = a x, then
// acc + w_k h_k for each present term, then acc + n z, then out = acc in x's dtype (combine() below). Which terms are
// present is decided per chunk at run time, so there is one loop per dtype, not one per subset of terms. acc is a
// local buffer that overlaps no tensor (hence __restrict__: GCC then vectorizes without a run-time overlap test,
// the test that once made in-place churn run scalar), and a chunk is stored only after all of it was read, so out
// may be x, an h or the noise.
constexpr int64_t kCombineChunk = 1024;  // elements per pass: acc is 4 KB, in L1 between passes

template <class TX>
FD_INLINE void combine_first_body(const TX* x, float a, float* __restrict__ acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] = ::fastdiff::combine_first(a, to_float(x[j]));
}

template <class T>
FD_INLINE void combine_term_body(const T* v, float w, float* __restrict__ acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] = ::fastdiff::combine_term(acc[j], w, to_float(v[j]));
}

template <class TX>
FD_INLINE void combine_store_body(const float* __restrict__ acc, TX* out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = from_float<TX>(acc[j]);
}

// acc + w z over `groups` whole Philox blocks first_block, first_block + 1, ... of one sample's stream (per_sample % 4
// == 0, as in noise_groups_body).
FD_INLINE void combine_drawn_groups_body(uint64_t seed, uint64_t first_block, uint64_t offset, float w,
                                         float* __restrict__ acc, int64_t groups) {
  for (int64_t j = 0; j < groups; ++j) {
    float z[4];
    block_normals(seed, first_block + (uint64_t)j, offset, z);
    for (int l = 0; l < 4; ++l) acc[4 * j + l] = ::fastdiff::combine_term(acc[4 * j + l], w, z[l]);
  }
}

// The same for elements first, ..., first + n - 1 of a sample of any size: each Philox block once, its lanes in range.
// Control flow: never vectorized, so not cloned either.
void combine_drawn_elements(uint64_t seed, int64_t first, uint64_t offset, float w, float* acc, int64_t n) {
  for (int64_t e = first; e < first + n;) {
    float z[4];
    block_normals(seed, (uint64_t)(e >> 2), offset, z);
    for (const int64_t stop = std::min(first + n, (e | 3) + 1); e < stop; ++e) {
      acc[e - first] = ::fastdiff::combine_term(acc[e - first], w, z[e & 3]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Cloned entry points, one per dtype combination (target_clones does not take templates).
// ---------------------------------------------------------------------------------------------------------
#define FD_EULER(NAME, TX, TD)                                                                                        \
  FD_CLONES void NAME(const void* x, const void* d, void* out, Scalars th, Scalars tn, int64_t P, int64_t b, int64_t e) { \
    euler_body<TX, TD>((const TX*)x, (const TD*)d, (TX*)out, th, tn, P, b, e);                                        \
  }
#define FD_HEUN(NAME, TX, TD)                                                                                         \
  FD_CLONES void NAME(const void* x, const void* d, const void* dn, void* out, Scalars th, Scalars tn, int64_t P,      \
                      int64_t b, int64_t e) {                                                                         \
    heun_body<TX, TD>((const TX*)x, (const TD*)d, (const TD*)dn, (TX*)out, th, tn, P, b, e);                          \
  }
#define FD_MULTISTEP(NAME, TX, TD)                                                                                    \
  FD_CLONES void NAME(const void* x, const void* d, const void* dp, void* out, Scalars c, Scalars t, Scalars tn,        \
                      int64_t P, int64_t b, int64_t e) {                                                              \
    multistep_body<TX, TD>((const TX*)x, (const TD*)d, (const TD*)dp, (TX*)out, c, t, tn, P, b, e);                   \
  }
#define FD_SKIP(NAME, TX, TF)                                                                                         \
  FD_CLONES void NAME(const void* x, const void* F, float* out, Scalars s, int k, float sd, int64_t P, int64_t b,     \
                      int64_t e) {                                                                                    \
    skip_mix_body<TX, TF>((const TX*)x, (const TF*)F, out, s, k, sd, P, b, e);                                        \
  }
#define FD_NOISE(NAME, TX, HAS_X, IN_PLACE, BODY, SIZE)                                                               \
  FD_CLONES void NAME(const void* x, void* out, const int64_t* seeds, uint64_t off, Scalars s, int64_t SIZE,           \
                      int64_t b, int64_t e) {                                                                         \
    BODY<TX, HAS_X, IN_PLACE>((const TX*)x, (TX*)out, seeds, off, s, SIZE, b, e);                                     \
  }

#define FD_FOR_PAIRS(M, PREFIX)                                                                                       \
  M(PREFIX##_f_f, float, float) M(PREFIX##_f_h, float, Float16) M(PREFIX##_f_b, float, BFloat16)                      \
  M(PREFIX##_h_f, Float16, float) M(PREFIX##_h_h, Float16, Float16) M(PREFIX##_h_b, Float16, BFloat16)               \
  M(PREFIX##_b_f, BFloat16, float) M(PREFIX##_b_h, BFloat16, Float16) M(PREFIX##_b_b, BFloat16, BFloat16)

FD_FOR_PAIRS(FD_EULER, euler)
FD_FOR_PAIRS(FD_HEUN, heun)
FD_FOR_PAIRS(FD_MULTISTEP, multistep)
FD_FOR_PAIRS(FD_SKIP, skip)
#define FD_FOR_TYPES(M, PREFIX, ...) M(PREFIX##_f, float, __VA_ARGS__) M(PREFIX##_h, Float16, __VA_ARGS__) M(PREFIX##_b, BFloat16, __VA_ARGS__)

FD_FOR_TYPES(FD_NOISE, churn_groups, true, false, noise_groups_body, G)
FD_FOR_TYPES(FD_NOISE, churn_groups_in_place, true, true, noise_groups_body, G)
FD_FOR_TYPES(FD_NOISE, churn_blocks, true, false, noise_blocks_body, P)
FD_FOR_TYPES(FD_NOISE, randn_groups, false, false, noise_groups_body, G)
FD_FOR_TYPES(FD_NOISE, randn_blocks, false, false, noise_blocks_body, P)

// The loss ops: per dtype (pair), five noise sources (given fp32, fp16, bf16; drawn over groups, over blocks).
struct LossInputArgs {
  const void* y;
  void* out;
  Noise noise;
  Scalars sigma, c_in;
};
struct LossErrorArgs {
  const void* y;
  const void* F;
  float* loss;
  float* grad;
  Noise noise;
  Scalars sigma, c_skip, c_out, weight;
};
#define FD_LOSS_INPUT(NAME, TY, BODY)                                                                                 \
  FD_CLONES void NAME(const LossInputArgs& a, int64_t size, int64_t b, int64_t e) {                                   \
    BODY(LossInputOp<TY>{(const TY*)a.y, (TY*)a.out, a.sigma, a.c_in}, a.noise, size, b, e);                          \
  }
#define FD_LOSS_ERROR(NAME, TY, TF, BODY)                                                                             \
  FD_CLONES void NAME(const LossErrorArgs& a, int64_t size, int64_t b, int64_t e) {                                   \
    BODY(LossErrorOp<TY, TF>{(const TY*)a.y, (const TF*)a.F, a.loss, a.grad, a.sigma, a.c_skip, a.c_out, a.weight},   \
         a.noise, size, b, e);                                                                                        \
  }
#define FD_LOSS_SOURCES(M, PREFIX, ...)                                                                               \
  M(PREFIX##_nf, __VA_ARGS__, given_noise_body<float>) M(PREFIX##_nh, __VA_ARGS__, given_noise_body<Float16>)         \
  M(PREFIX##_nb, __VA_ARGS__, given_noise_body<BFloat16>) M(PREFIX##_groups, __VA_ARGS__, drawn_groups_body)          \
  M(PREFIX##_blocks, __VA_ARGS__, drawn_blocks_body)
#define FD_LOSS_INPUT_SOURCES(PREFIX, TY) FD_LOSS_SOURCES(FD_LOSS_INPUT, PREFIX, TY)
#define FD_LOSS_ERROR_SOURCES(PREFIX, TY, TF) FD_LOSS_SOURCES(FD_LOSS_ERROR, PREFIX, TY, TF)

FD_LOSS_INPUT_SOURCES(loss_input_f, float)
FD_LOSS_INPUT_SOURCES(loss_input_h, Float16)
FD_LOSS_INPUT_SOURCES(loss_input_b, BFloat16)
FD_FOR_PAIRS(FD_LOSS_ERROR_SOURCES, loss_error)

// combine's passes, per dtype: the element pointers are the tensor's plus `first` elements.
#define FD_COMBINE(SUFFIX, T)                                                                                         \
  FD_CLONES void combine_first_##SUFFIX(const void* x, int64_t first, float a, float* acc, int64_t n) {              \
    combine_first_body<T>((const T*)x + first, a, acc, n);                                                            \
  }                                                                                                                   \
  FD_CLONES void combine_term_##SUFFIX(const void* v, int64_t first, float w, float* acc, int64_t n) {               \
    combine_term_body<T>((const T*)v + first, w, acc, n);                                                             \
  }                                                                                                                   \
  FD_CLONES void combine_store_##SUFFIX(const float* acc, void* out, int64_t first, int64_t n) {                      \
    combine_store_body<T>(acc, (T*)out + first, n);                                                                   \
  }

FD_COMBINE(f, float)
FD_COMBINE(h, Float16)
FD_COMBINE(b, BFloat16)
FD_CLONES void combine_drawn_groups(uint64_t seed, uint64_t first_block, uint64_t offset, float w, float* acc,
                                    int64_t groups) {
  combine_drawn_groups_body(seed, first_block, offset, w, acc, groups);
}

using CombineReadFn = void (*)(const void*, int64_t, float, float*, int64_t);
using CombineStoreFn = void (*)(const float*, void*, int64_t, int64_t);
const CombineReadFn kCombineFirst[3] = {combine_first_f, combine_first_h, combine_first_b};
const CombineReadFn kCombineTerm[3] = {combine_term_f, combine_term_h, combine_term_b};
const CombineStoreFn kCombineStore[3] = {combine_store_f, combine_store_h, combine_store_b};

using EulerFn = void (*)(const void*, const void*, void*, Scalars, Scalars, int64_t, int64_t, int64_t);
using HeunFn = void (*)(const void*, const void*, const void*, void*, Scalars, Scalars, int64_t, int64_t, int64_t);
using MultistepFn = void (*)(const void*, const void*, const void*, void*, Scalars, Scalars, Scalars, int64_t, int64_t,
                             int64_t);
using SkipFn = void (*)(const void*, const void*, float*, Scalars, int, float, int64_t, int64_t, int64_t);
using NoiseFn = void (*)(const void*, void*, const int64_t*, uint64_t, Scalars, int64_t, int64_t, int64_t);

const EulerFn kEuler[3][3] = {{euler_f_f, euler_f_h, euler_f_b}, {euler_h_f, euler_h_h, euler_h_b}, {euler_b_f, euler_b_h, euler_b_b}};
const HeunFn kHeun[3][3] = {{heun_f_f, heun_f_h, heun_f_b}, {heun_h_f, heun_h_h, heun_h_b}, {heun_b_f, heun_b_h, heun_b_b}};
const MultistepFn kMultistep[3][3] = {{multistep_f_f, multistep_f_h, multistep_f_b},
                                      {multistep_h_f, multistep_h_h, multistep_h_b},
                                      {multistep_b_f, multistep_b_h, multistep_b_b}};
const SkipFn kSkip[3][3] = {{skip_f_f, skip_f_h, skip_f_b}, {skip_h_f, skip_h_h, skip_h_b}, {skip_b_f, skip_b_h, skip_b_b}};
const NoiseFn kChurnGroups[3] = {churn_groups_f, churn_groups_h, churn_groups_b};
const NoiseFn kChurnGroupsInPlace[3] = {churn_groups_in_place_f, churn_groups_in_place_h, churn_groups_in_place_b};
const NoiseFn kChurnBlocks[3] = {churn_blocks_f, churn_blocks_h, churn_blocks_b};
const NoiseFn kRandnGroups[3] = {randn_groups_f, randn_groups_h, randn_groups_b};
const NoiseFn kRandnBlocks[3] = {randn_blocks_f, randn_blocks_h, randn_blocks_b};

using LossInputFn = void (*)(const LossInputArgs&, int64_t, int64_t, int64_t);
using LossErrorFn = void (*)(const LossErrorArgs&, int64_t, int64_t, int64_t);
#define FD_SOURCES(PREFIX) {PREFIX##_nf, PREFIX##_nh, PREFIX##_nb, PREFIX##_groups, PREFIX##_blocks}
const LossInputFn kLossInput[3][5] = {FD_SOURCES(loss_input_f), FD_SOURCES(loss_input_h), FD_SOURCES(loss_input_b)};
const LossErrorFn kLossError[3][3][5] = {
    {FD_SOURCES(loss_error_f_f), FD_SOURCES(loss_error_f_h), FD_SOURCES(loss_error_f_b)},
    {FD_SOURCES(loss_error_h_f), FD_SOURCES(loss_error_h_h), FD_SOURCES(loss_error_h_b)},
    {FD_SOURCES(loss_error_b_f), FD_SOURCES(loss_error_b_h), FD_SOURCES(loss_error_b_b)}};
enum { kDrawnGroups = 3, kDrawnBlocks = 4 };  // noise sources 0..2 are given noise, by DType

// Run fn(source, size, begin, end) of a loss op over its items: elements for given noise, else groups of 4
// (per_sample % 4 == 0) or (sample, block) pairs; size is what the source's body takes (per_sample or groups).
template <class Fn>
void loss_loop(const Noise& noise, Shape shape, const Fn& fn) {
  const int64_t P = shape.per_sample;
  if (noise.ptr != nullptr)
    parallel_for(shape.batch * P, shape.num_threads, [&](int64_t b, int64_t e) { fn(noise.type, P, b, e); });
  else if (P % 4 == 0)
    parallel_for(shape.batch * (P / 4), shape.num_threads, [&](int64_t b, int64_t e) { fn(kDrawnGroups, P / 4, b, e); });
  else
    parallel_for(shape.batch * ((P + 3) / 4), shape.num_threads, [&](int64_t b, int64_t e) { fn(kDrawnBlocks, P, b, e); });
}

void noise(const void* x, void* out, DType type, const int64_t* seeds, uint64_t offset, Scalars noise_std, Shape shape,
           const NoiseFn groups[3], const NoiseFn blocks[3]) {
  const int64_t P = shape.per_sample;
  if (P % 4 == 0) {
    const int64_t G = P / 4;
    parallel_for(shape.batch * G, shape.num_threads,
                 [&](int64_t b, int64_t e) { groups[type](x, out, seeds, offset, noise_std, G, b, e); });
  } else {
    parallel_for(shape.batch * ((P + 3) / 4), shape.num_threads,
                 [&](int64_t b, int64_t e) { blocks[type](x, out, seeds, offset, noise_std, P, b, e); });
  }
}

}  // namespace

void randn(void* out, DType out_type, const int64_t* seeds, uint64_t offset, Shape shape) {
  noise(nullptr, out, out_type, seeds, offset, Scalars{nullptr, false}, shape, kRandnGroups, kRandnBlocks);
}

void churn(const void* x, void* out, DType x_type, const int64_t* seeds, uint64_t offset, Scalars noise_std, Shape shape) {
  // x and out are the same tensor or disjoint (csrc/binding.h refuses partial overlaps).
  noise(x, out, x_type, seeds, offset, noise_std, shape, x == out ? kChurnGroupsInPlace : kChurnGroups, kChurnBlocks);
}

void stream_words(int64_t* out, const int64_t* seeds, uint64_t offset, Shape shape) {
  const int64_t P = shape.per_sample, blocks_per_sample = (P + 3) / 4;
  parallel_for(shape.batch * blocks_per_sample, shape.num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / blocks_per_sample, block = item - b * blocks_per_sample;
      const Words v = fastdiff::stream_words((uint64_t)seeds[b], (uint64_t)block, offset);
      const uint32_t words[4] = {v.w0, v.w1, v.w2, v.w3};
      for (int64_t l = 0; l < std::min<int64_t>(4, P - 4 * block); ++l) out[b * P + 4 * block + l] = words[l];
    }
  });
}

void euler_step(const void* x_hat, DType x_type, const void* denoised, DType d_type, void* out, Scalars t_hat,
                Scalars t_next, Shape shape) {
  parallel_for(shape.batch * shape.per_sample, shape.num_threads, [&](int64_t b, int64_t e) {
    kEuler[x_type][d_type](x_hat, denoised, out, t_hat, t_next, shape.per_sample, b, e);
  });
}

void heun_step(const void* x_hat, DType x_type, const void* denoised, const void* denoised_next, DType d_type, void* out,
               Scalars t_hat, Scalars t_next, Shape shape) {
  parallel_for(shape.batch * shape.per_sample, shape.num_threads, [&](int64_t b, int64_t e) {
    kHeun[x_type][d_type](x_hat, denoised, denoised_next, out, t_hat, t_next, shape.per_sample, b, e);
  });
}

void multistep_step(const void* x, DType x_type, const void* denoised, const void* denoised_prev, DType d_type,
                    void* out, Scalars c, Scalars t, Scalars t_next, Shape shape) {
  parallel_for(shape.batch * shape.per_sample, shape.num_threads, [&](int64_t b, int64_t e) {
    kMultistep[x_type][d_type](x, denoised, denoised_prev, out, c, t, t_next, shape.per_sample, b, e);
  });
}

void combine(const void* x, DType x_type, const void* const h[4], DType h_type, Noise noise, const float* coeffs,
             void* out, Shape shape) {
  const int64_t P = shape.per_sample;
  const bool drawn = noise.ptr == nullptr && noise.seeds != nullptr;
  parallel_for(shape.batch * P, shape.num_threads, [&](int64_t begin, int64_t end) {
    alignas(64) float acc[kCombineChunk];
    // Chunks stay within one sample (its seed) and, when P % 4 == 0, start and end on whole Philox blocks: begin is a
    // multiple of 64 (parallel_for), and end, the sample's end and kCombineChunk are multiples of 4.
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / P, stop = std::min(std::min(end, (b + 1) * P), i + kCombineChunk), n = stop - i;
      kCombineFirst[x_type](x, i, coeffs[0], acc, n);
      for (int k = 0; k < 4; ++k)
        if (h[k] != nullptr) kCombineTerm[h_type](h[k], i, coeffs[1 + k], acc, n);
      if (noise.ptr != nullptr) {
        kCombineTerm[noise.type](noise.ptr, i, coeffs[5], acc, n);
      } else if (drawn) {
        const uint64_t seed = (uint64_t)noise.seeds[b];
        const int64_t e = i - b * P;
        if (P % 4 == 0)
          combine_drawn_groups(seed, (uint64_t)(e / 4), noise.offset, coeffs[5], acc, n / 4);
        else
          combine_drawn_elements(seed, e, noise.offset, coeffs[5], acc, n);
      }
      kCombineStore[x_type](acc, out, i, n);
      i = stop;
    }
  });
}

void skip_mix(const void* x, DType x_type, const void* F, DType F_type, float* out, Scalars sigma, int kind,
              float sigma_data, Shape shape) {
  parallel_for(shape.batch * shape.per_sample, shape.num_threads, [&](int64_t b, int64_t e) {
    kSkip[x_type][F_type](x, F, out, sigma, kind, sigma_data, shape.per_sample, b, e);
  });
}

void loss_input(const void* y, DType y_type, Noise noise, void* out, Scalars sigma, Scalars c_in, Shape shape) {
  const LossInputArgs args{y, out, noise, sigma, c_in};
  loss_loop(noise, shape, [&](int source, int64_t size, int64_t b, int64_t e) { kLossInput[y_type][source](args, size, b, e); });
}

void loss_error(const void* y, DType y_type, const void* F, DType F_type, Noise noise, float* loss, float* grad,
                Scalars sigma, Scalars c_skip, Scalars c_out, Scalars weight, Shape shape) {
  const LossErrorArgs args{y, F, loss, grad, noise, sigma, c_skip, c_out, weight};
  loss_loop(noise, shape, [&](int source, int64_t size, int64_t b, int64_t e) {
    kLossError[y_type][F_type][source](args, size, b, e);
  });
}

}  // namespace cpu
}  // namespace fastdiff
