// fastdiff's CUDA kernels (see kernels.h): the per-element math of csrc/fastdiff_math.h with 128-bit accesses.
//
// The vectorized kernels give each thread 8 consecutive elements, moved as two float4 (fp32) or one 16-byte
// word (fp16/bf16); they run when every data pointer is 16-byte aligned and the element count is a multiple
// of 8, and a one-element-per-thread kernel covers everything else. Built with --fmad=false, so the CUDA
// kernels compute the same float32 operations as the CPU kernels (csrc/cpu/kernels.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "../fastdiff_math.h"
#include "kernels.h"

namespace fastdiff {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// ---------------------------------------------------------------------------------------------------------
// Loads and stores: float <-> fp32/fp16/bf16, one element or eight (128-bit per 8 half-width elements).
// ---------------------------------------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ void load8(const float* p, float v[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const __half* p, float v[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(h[k]);
    v[2 * k] = f.x, v[2 * k + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float v[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(h[k]);
    v[2 * k] = f.x, v[2 * k + 1] = f.y;
  }
}

__device__ __forceinline__ void store8(float* p, const float v[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(__half* p, const float v[8]) {
  uint4 raw;
  __half2* h = reinterpret_cast<__half2*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float v[8]) {
  uint4 raw;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// A per-step value of element i: one value for all samples, or that of i's sample.
__device__ __forceinline__ float value(Scalars s, int64_t i, int64_t per_sample) {
  return __ldg(s.ptr + (s.per_sample ? i / per_sample : 0));
}

__device__ __forceinline__ int64_t thread_index() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }

// The stream's normals (fastdiff/rng.py): those of thread t's 8 elements, its two whole Philox blocks (per_sample
// % 4 == 0), or that of element i, which computes its own block and takes its lane.
__device__ __forceinline__ void stream_normals8(const int64_t* seeds, uint64_t offset, int64_t t, int64_t P, float n[8]) {
  const int64_t groups_per_sample = P / 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t g = 2 * t + h, b = g / groups_per_sample;
    block_normals((uint64_t)__ldg(seeds + b), (uint64_t)(g - b * groups_per_sample), offset, n + 4 * h);
  }
}
__device__ __forceinline__ float stream_normal(const int64_t* seeds, uint64_t offset, int64_t i, int64_t P) {
  const int64_t b = i / P, e = i - b * P;
  float n[4];
  block_normals((uint64_t)__ldg(seeds + b), (uint64_t)(e >> 2), offset, n);
  return n[e & 3];
}

// A loss's or combine's noise n (kernels.h Noise), the given tensor's (of type TN) or, for TN = Drawn, the stream's.
struct Drawn {};
struct NoNoise {};  // combine without a noise term
template <class TN>
__device__ __forceinline__ void loss_noise8(const Noise& noise, int64_t t, int64_t P, float n[8]) {
  if constexpr (std::is_same_v<TN, Drawn>)
    stream_normals8(noise.seeds, (uint64_t)__ldg(noise.offset), t, P, n);
  else
    load8(static_cast<const TN*>(noise.ptr) + t * 8, n);
}
template <class TN>
__device__ __forceinline__ float loss_noise(const Noise& noise, int64_t i, int64_t P) {
  if constexpr (std::is_same_v<TN, Drawn>)
    return stream_normal(noise.seeds, (uint64_t)__ldg(noise.offset), i, P);
  else
    return to_float(static_cast<const TN*>(noise.ptr)[i]);
}

// ---------------------------------------------------------------------------------------------------------
// Kernels. kVec: 8 elements per thread with 128-bit accesses; otherwise one element per thread.
// ---------------------------------------------------------------------------------------------------------
template <class TX, class TD, bool kVec>
__global__ void euler_step_kernel(const TX* x_hat, const TD* denoised, TX* out, Scalars t_hat, Scalars t_next,
                                  int64_t numel, int64_t P) {
  if (kVec) {
    const int64_t i0 = thread_index() * 8;
    if (i0 >= numel) return;
    float x[8], d[8], o[8];
    load8(x_hat + i0, x);
    load8(denoised + i0, d);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = fastdiff::euler_step(x[k], d[k], value(t_hat, i0 + k, P), value(t_next, i0 + k, P));
    store8(out + i0, o);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    out[i] = from_float<TX>(fastdiff::euler_step(to_float(x_hat[i]), to_float(denoised[i]), value(t_hat, i, P), value(t_next, i, P)));
  }
}

template <class TX, class TD, bool kVec>
__global__ void heun_step_kernel(const TX* x_hat, const TD* denoised, const TD* denoised_next, TX* out, Scalars t_hat,
                                 Scalars t_next, int64_t numel, int64_t P) {
  if (kVec) {
    const int64_t i0 = thread_index() * 8;
    if (i0 >= numel) return;
    float x[8], d[8], dn[8], o[8];
    load8(x_hat + i0, x);
    load8(denoised + i0, d);
    load8(denoised_next + i0, dn);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      o[k] = fastdiff::heun_step(x[k], d[k], dn[k], value(t_hat, i0 + k, P), value(t_next, i0 + k, P));
    store8(out + i0, o);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    out[i] = from_float<TX>(fastdiff::heun_step(to_float(x_hat[i]), to_float(denoised[i]), to_float(denoised_next[i]),
                                                value(t_hat, i, P), value(t_next, i, P)));
  }
}

template <class TX, class TD, bool kVec>
__global__ void multistep_step_kernel(const TX* x, const TD* denoised, const TD* denoised_prev, TX* out, Scalars c,
                                      Scalars t, Scalars t_next, int64_t numel, int64_t P) {
  if (kVec) {
    const int64_t i0 = thread_index() * 8;
    if (i0 >= numel) return;
    float xv[8], d[8], dp[8], o[8];
    load8(x + i0, xv);
    load8(denoised + i0, d);
    load8(denoised_prev + i0, dp);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      o[k] = fastdiff::multistep_step(xv[k], d[k], dp[k], value(c, i0 + k, P),
                                      multistep_ratio(value(t, i0 + k, P), value(t_next, i0 + k, P)));
    store8(out + i0, o);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    out[i] = from_float<TX>(fastdiff::multistep_step(to_float(x[i]), to_float(denoised[i]), to_float(denoised_prev[i]),
                                                     value(c, i, P), multistep_ratio(value(t, i, P), value(t_next, i, P))));
  }
}

template <class TX, class TF, bool kVec>
__global__ void skip_mix_kernel(const TX* x, const TF* F, float* out, Scalars sigma, int kind, float sigma_data,
                                int64_t numel, int64_t P) {
  if (kVec) {
    const int64_t i0 = thread_index() * 8;
    if (i0 >= numel) return;
    float xv[8], fv[8], o[8];
    load8(x + i0, xv);
    load8(F + i0, fv);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float c_skip, c_out;
      skip_coefficients(kind, value(sigma, i0 + k, P), sigma_data, &c_skip, &c_out);
      o[k] = fastdiff::skip_mix(xv[k], fv[k], c_skip, c_out);
    }
    store8(out + i0, o);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    float c_skip, c_out;
    skip_coefficients(kind, value(sigma, i, P), sigma_data, &c_skip, &c_out);
    out[i] = fastdiff::skip_mix(to_float(x[i]), to_float(F[i]), c_skip, c_out);
  }
}

// Noise: kVec (per_sample % 4 == 0): a thread computes the two Philox blocks of its 8 elements; otherwise each
// element computes its own block and takes its lane.
template <class TX, bool kHasX, bool kVec>
__global__ void noise_kernel(const TX* x, TX* out, const int64_t* seeds, const int64_t* offset_ptr, Scalars noise_std,
                             int64_t numel, int64_t P) {
  const uint64_t offset = (uint64_t)__ldg(offset_ptr);
  if (kVec) {
    const int64_t t = thread_index(), i0 = t * 8;
    if (i0 >= numel) return;
    float n[8];
    stream_normals8(seeds, offset, t, P, n);
    if (kHasX) {
      float xv[8];
      load8(x + i0, xv);
#pragma unroll
      for (int k = 0; k < 8; ++k) n[k] = fastdiff::churn(xv[k], value(noise_std, i0 + k, P), n[k]);
    }
    store8(out + i0, n);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    const float eps = stream_normal(seeds, offset, i, P);
    out[i] = from_float<TX>(kHasX ? fastdiff::churn(to_float(x[i]), value(noise_std, i, P), eps) : eps);
  }
}

// combine's history tensors h0..h3, each null when absent (passed by value: the kernel reads the pointers as arguments).
template <class TH>
struct History {
  const TH* h[4];
};

// combine, with z given (TN), drawn (TN = Drawn; kVec then needs per_sample % 4 == 0) or absent (TN = NoNoise). The
// present h's are a run-time choice, the same for every thread (no divergence): one kernel per dtype, not per subset.
template <class TX, class TH, class TN, bool kVec>
__global__ void combine_kernel(const TX* x, History<TH> history, Noise noise, const float* coeffs, TX* out,
                               int64_t numel, int64_t P) {
  constexpr bool kHasNoise = !std::is_same_v<TN, NoNoise>;
  if (kVec) {
    const int64_t t = thread_index(), i0 = t * 8;
    if (i0 >= numel) return;
    float acc[8], v[8];
    load8(x + i0, v);
    const float a = __ldg(coeffs);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = fastdiff::combine_first(a, v[e]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (history.h[k] == nullptr) continue;
      load8(history.h[k] + i0, v);
      const float w = __ldg(coeffs + 1 + k);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fastdiff::combine_term(acc[e], w, v[e]);
    }
    if constexpr (kHasNoise) {
      loss_noise8<TN>(noise, t, P, v);
      const float n = __ldg(coeffs + 5);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fastdiff::combine_term(acc[e], n, v[e]);
    }
    store8(out + i0, acc);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    float acc = fastdiff::combine_first(__ldg(coeffs), to_float(x[i]));
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (history.h[k] != nullptr) acc = fastdiff::combine_term(acc, __ldg(coeffs + 1 + k), to_float(history.h[k][i]));
    if constexpr (kHasNoise) acc = fastdiff::combine_term(acc, __ldg(coeffs + 5), loss_noise<TN>(noise, i, P));
    out[i] = from_float<TX>(acc);
  }
}

// The loss ops, with the given noise (TN) or the stream's (TN = Drawn; kVec then needs per_sample % 4 == 0).
template <class TY, class TN, bool kVec>
__global__ void loss_input_kernel(const TY* y, Noise noise, TY* out, Scalars sigma, Scalars c_in, int64_t numel, int64_t P) {
  if (kVec) {
    const int64_t t = thread_index(), i0 = t * 8;
    if (i0 >= numel) return;
    float yv[8], n[8], o[8];
    loss_noise8<TN>(noise, t, P, n);
    load8(y + i0, yv);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = fastdiff::loss_input(yv[k], n[k], value(sigma, i0 + k, P), value(c_in, i0 + k, P));
    store8(out + i0, o);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    out[i] = from_float<TY>(fastdiff::loss_input(to_float(y[i]), loss_noise<TN>(noise, i, P), value(sigma, i, P), value(c_in, i, P)));
  }
}

template <class TY, class TF, class TN, bool kVec>
__global__ void loss_error_kernel(const TY* y, const TF* F, Noise noise, float* loss, float* grad, Scalars sigma,
                                  Scalars c_skip, Scalars c_out, Scalars weight, int64_t numel, int64_t P) {
  if (kVec) {
    const int64_t t = thread_index(), i0 = t * 8;
    if (i0 >= numel) return;
    float yv[8], fv[8], n[8], l[8], g[8];
    loss_noise8<TN>(noise, t, P, n);
    load8(y + i0, yv);
    load8(F + i0, fv);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      fastdiff::loss_error(yv[k], fv[k], n[k], value(sigma, i0 + k, P), value(c_skip, i0 + k, P), value(c_out, i0 + k, P),
                           value(weight, i0 + k, P), &l[k], &g[k]);
    store8(loss + i0, l);
    store8(grad + i0, g);
  } else {
    const int64_t i = thread_index();
    if (i >= numel) return;
    fastdiff::loss_error(to_float(y[i]), to_float(F[i]), loss_noise<TN>(noise, i, P), value(sigma, i, P), value(c_skip, i, P),
                         value(c_out, i, P), value(weight, i, P), &loss[i], &grad[i]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Launchers: pick the vectorized kernel when alignment and size allow, and the element types at run time.
// ---------------------------------------------------------------------------------------------------------
bool aligned16(const void* p) { return p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

dim3 grid_for(int64_t threads) { return dim3((unsigned)((threads + kThreads - 1) / kThreads)); }

template <class F>
cudaError_t with_type(DType type, F&& f) {
  switch (type) {
    case kFloat32: return f(float());
    case kFloat16: return f(__half());
    case kBFloat16: return f(__nv_bfloat16());
  }
  return cudaErrorInvalidValue;
}

// A loss kernel's noise type: the given tensor's, or Drawn.
template <class F>
cudaError_t with_noise_type(const Noise& noise, F&& f) {
  if (noise.ptr == nullptr) return f(Drawn());
  return with_type(noise.type, f);
}

// The loss kernels run vectorized when the data and noise allow it, and drawn noise comes in whole blocks.
bool loss_vec(const Noise& noise, int64_t numel, int64_t P) {
  return numel % 8 == 0 && aligned16(noise.ptr) && (noise.ptr != nullptr || P % 4 == 0);
}

// combine's noise type: NoNoise, Drawn, or the given tensor's.
template <class F>
cudaError_t with_combine_noise_type(const Noise& noise, F&& f) {
  if (noise.ptr == nullptr) return noise.seeds == nullptr ? f(NoNoise()) : f(Drawn());
  return with_type(noise.type, f);
}

template <class TX, bool kHasX>
cudaError_t launch_noise(const void* x, void* out, const int64_t* seeds, const int64_t* offset, Scalars noise_std,
                         Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = s.per_sample % 4 == 0 && numel % 8 == 0 && aligned16(x) && aligned16(out);
  if (vec)
    noise_kernel<TX, kHasX, true><<<grid_for(numel / 8), kThreads, 0, stream>>>((const TX*)x, (TX*)out, seeds, offset,
                                                                                  noise_std, numel, s.per_sample);
  else
    noise_kernel<TX, kHasX, false><<<grid_for(numel), kThreads, 0, stream>>>((const TX*)x, (TX*)out, seeds, offset,
                                                                               noise_std, numel, s.per_sample);
  return cudaGetLastError();
}

}  // namespace

cudaError_t randn(void* out, DType out_type, const int64_t* seeds, const int64_t* offset, Shape shape, cudaStream_t stream) {
  return with_type(out_type, [&](auto tx) {
    return launch_noise<decltype(tx), false>(nullptr, out, seeds, offset, Scalars{nullptr, false}, shape, stream);
  });
}

cudaError_t churn(const void* x, void* out, DType x_type, const int64_t* seeds, const int64_t* offset, Scalars noise_std,
                  Shape shape, cudaStream_t stream) {
  return with_type(x_type, [&](auto tx) {
    return launch_noise<decltype(tx), true>(x, out, seeds, offset, noise_std, shape, stream);
  });
}

cudaError_t euler_step(const void* x_hat, DType x_type, const void* denoised, DType d_type, void* out, Scalars t_hat,
                       Scalars t_next, Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = numel % 8 == 0 && aligned16(x_hat) && aligned16(denoised) && aligned16(out);
  return with_type(x_type, [&](auto tx) {
    return with_type(d_type, [&](auto td) {
      using TX = decltype(tx);
      using TD = decltype(td);
      if (vec)
        euler_step_kernel<TX, TD, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
            (const TX*)x_hat, (const TD*)denoised, (TX*)out, t_hat, t_next, numel, s.per_sample);
      else
        euler_step_kernel<TX, TD, false><<<grid_for(numel), kThreads, 0, stream>>>(
            (const TX*)x_hat, (const TD*)denoised, (TX*)out, t_hat, t_next, numel, s.per_sample);
      return cudaGetLastError();
    });
  });
}

cudaError_t heun_step(const void* x_hat, DType x_type, const void* denoised, const void* denoised_next, DType d_type,
                      void* out, Scalars t_hat, Scalars t_next, Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = numel % 8 == 0 && aligned16(x_hat) && aligned16(denoised) && aligned16(denoised_next) && aligned16(out);
  return with_type(x_type, [&](auto tx) {
    return with_type(d_type, [&](auto td) {
      using TX = decltype(tx);
      using TD = decltype(td);
      if (vec)
        heun_step_kernel<TX, TD, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
            (const TX*)x_hat, (const TD*)denoised, (const TD*)denoised_next, (TX*)out, t_hat, t_next, numel, s.per_sample);
      else
        heun_step_kernel<TX, TD, false><<<grid_for(numel), kThreads, 0, stream>>>(
            (const TX*)x_hat, (const TD*)denoised, (const TD*)denoised_next, (TX*)out, t_hat, t_next, numel, s.per_sample);
      return cudaGetLastError();
    });
  });
}

cudaError_t multistep_step(const void* x, DType x_type, const void* denoised, const void* denoised_prev, DType d_type,
                           void* out, Scalars c, Scalars t, Scalars t_next, Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = numel % 8 == 0 && aligned16(x) && aligned16(denoised) && aligned16(denoised_prev) && aligned16(out);
  return with_type(x_type, [&](auto tx) {
    return with_type(d_type, [&](auto td) {
      using TX = decltype(tx);
      using TD = decltype(td);
      if (vec)
        multistep_step_kernel<TX, TD, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
            (const TX*)x, (const TD*)denoised, (const TD*)denoised_prev, (TX*)out, c, t, t_next, numel, s.per_sample);
      else
        multistep_step_kernel<TX, TD, false><<<grid_for(numel), kThreads, 0, stream>>>(
            (const TX*)x, (const TD*)denoised, (const TD*)denoised_prev, (TX*)out, c, t, t_next, numel, s.per_sample);
      return cudaGetLastError();
    });
  });
}

cudaError_t combine(const void* x, DType x_type, const void* const h[4], DType h_type, Noise noise, const float* coeffs,
                    void* out, Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool drawn = noise.ptr == nullptr && noise.seeds != nullptr;
  const bool vec = numel % 8 == 0 && aligned16(x) && aligned16(out) && aligned16(h[0]) && aligned16(h[1]) &&
                   aligned16(h[2]) && aligned16(h[3]) && aligned16(noise.ptr) && (!drawn || s.per_sample % 4 == 0);
  return with_type(x_type, [&](auto tx) {
    return with_type(h_type, [&](auto th) {
      return with_combine_noise_type(noise, [&](auto tn) {
        using TX = decltype(tx);
        using TH = decltype(th);
        using TN = decltype(tn);
        const History<TH> history{{(const TH*)h[0], (const TH*)h[1], (const TH*)h[2], (const TH*)h[3]}};
        if (vec)
          combine_kernel<TX, TH, TN, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
              (const TX*)x, history, noise, coeffs, (TX*)out, numel, s.per_sample);
        else
          combine_kernel<TX, TH, TN, false><<<grid_for(numel), kThreads, 0, stream>>>(
              (const TX*)x, history, noise, coeffs, (TX*)out, numel, s.per_sample);
        return cudaGetLastError();
      });
    });
  });
}

cudaError_t skip_mix(const void* x, DType x_type, const void* F, DType F_type, float* out, Scalars sigma, int kind,
                     float sigma_data, Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = numel % 8 == 0 && aligned16(x) && aligned16(F) && aligned16(out);
  return with_type(x_type, [&](auto tx) {
    return with_type(F_type, [&](auto tf) {
      using TX = decltype(tx);
      using TF = decltype(tf);
      if (vec)
        skip_mix_kernel<TX, TF, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
            (const TX*)x, (const TF*)F, out, sigma, kind, sigma_data, numel, s.per_sample);
      else
        skip_mix_kernel<TX, TF, false><<<grid_for(numel), kThreads, 0, stream>>>(
            (const TX*)x, (const TF*)F, out, sigma, kind, sigma_data, numel, s.per_sample);
      return cudaGetLastError();
    });
  });
}

cudaError_t loss_input(const void* y, DType y_type, Noise noise, void* out, Scalars sigma, Scalars c_in, Shape s,
                       cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = loss_vec(noise, numel, s.per_sample) && aligned16(y) && aligned16(out);
  return with_type(y_type, [&](auto ty) {
    return with_noise_type(noise, [&](auto tn) {
      using TY = decltype(ty);
      using TN = decltype(tn);
      if (vec)
        loss_input_kernel<TY, TN, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
            (const TY*)y, noise, (TY*)out, sigma, c_in, numel, s.per_sample);
      else
        loss_input_kernel<TY, TN, false><<<grid_for(numel), kThreads, 0, stream>>>(
            (const TY*)y, noise, (TY*)out, sigma, c_in, numel, s.per_sample);
      return cudaGetLastError();
    });
  });
}

cudaError_t loss_error(const void* y, DType y_type, const void* F, DType F_type, Noise noise, float* loss, float* grad,
                       Scalars sigma, Scalars c_skip, Scalars c_out, Scalars weight, Shape s, cudaStream_t stream) {
  const int64_t numel = s.batch * s.per_sample;
  if (numel == 0) return cudaSuccess;
  const bool vec = loss_vec(noise, numel, s.per_sample) && aligned16(y) && aligned16(F) && aligned16(loss) && aligned16(grad);
  return with_type(y_type, [&](auto ty) {
    return with_type(F_type, [&](auto tf) {
      return with_noise_type(noise, [&](auto tn) {
        using TY = decltype(ty);
        using TF = decltype(tf);
        using TN = decltype(tn);
        if (vec)
          loss_error_kernel<TY, TF, TN, true><<<grid_for(numel / 8), kThreads, 0, stream>>>(
              (const TY*)y, (const TF*)F, noise, loss, grad, sigma, c_skip, c_out, weight, numel, s.per_sample);
        else
          loss_error_kernel<TY, TF, TN, false><<<grid_for(numel), kThreads, 0, stream>>>(
              (const TY*)y, (const TF*)F, noise, loss, grad, sigma, c_skip, c_out, weight, numel, s.per_sample);
        return cudaGetLastError();
      });
    });
  });
}

}  // namespace cuda
}  // namespace fastdiff
