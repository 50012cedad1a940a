// fastdiff's C++ CPU kernels: raw-pointer entry points, no torch (csrc/bindings.cpp holds the torch code).
//
// Every tensor is contiguous with shape [batch, per_sample]; per-step values (t_hat, t_next, noise_std, sigma, the
// loss coefficients) are float32 arrays of one value (per_sample = false) or one per sample. Data tensors are
// float32, float16 or bfloat16 (DType); the math is float32 (csrc/fastdiff_math.h). num_threads <= 1 runs on the
// calling thread.
#pragma once

#include <stdint.h>

#include "../dtypes.h"

namespace fastdiff {
namespace cpu {

using ::fastdiff::DType;

struct Scalars {  // a per-step value: ptr[0] for every sample, or ptr[b] for sample b
  const float* ptr;
  bool per_sample;
};

struct Shape {
  int64_t batch;
  int64_t per_sample;
  int num_threads;
};

// A loss's noise n: the tensor at ptr (of `type`, contiguous, the data's shape) when ptr is not null, else the
// normals of each sample's seed at `offset` (element e of sample b is lane e % 4 of block e / 4, as churn's eps).
struct Noise {
  const void* ptr;
  DType type;
  const int64_t* seeds;
  uint64_t offset;
};

// out = eps, the normals of each sample's seed at `offset` (fastdiff/rng.py).
void randn(void* out, DType out_type, const int64_t* seeds, uint64_t offset, Shape shape);
// out[b, e] = the raw uint32 word of element e of sample b (for bit-exact tests).
void stream_words(int64_t* out, const int64_t* seeds, uint64_t offset, Shape shape);
// out = x + noise_std * eps.
void churn(const void* x, void* out, DType x_type, const int64_t* seeds, uint64_t offset, Scalars noise_std, Shape shape);
// out = x_hat + (t_next - t_hat) (x_hat - denoised) / t_hat, in x_hat's dtype.
void euler_step(const void* x_hat, DType x_type, const void* denoised, DType d_type, void* out, Scalars t_hat,
                Scalars t_next, Shape shape);
// out = Heun's corrected step from x_hat, D(x_hat), D(x_next), in x_hat's dtype.
void heun_step(const void* x_hat, DType x_type, const void* denoised, const void* denoised_next, DType d_type, void* out,
               Scalars t_hat, Scalars t_next, Shape shape);
// out = D' + (t_next / t) (x - D') with D' = D + c (D - D_prev), in x's dtype (DPM-Solver++(2M)'s step).
void multistep_step(const void* x, DType x_type, const void* denoised, const void* denoised_prev, DType d_type,
                    void* out, Scalars c, Scalars t, Scalars t_next, Shape shape);
// out = a x + w0 h[0] + w1 h[1] + w2 h[2] + w3 h[3] + n z in x's dtype with (a, w0, w1, w2, w3, n) = coeffs[0..5]
// (a solver's update). h[k] null: term k is absent and its weight not read; the present h's are of h_type. z is the
// given noise (noise.ptr), the normals of each sample's seed at noise.offset (noise.seeds), or absent when both are
// null. out may be x, one of the h's or the noise itself.
void combine(const void* x, DType x_type, const void* const h[4], DType h_type, Noise noise, const float* coeffs,
             void* out, Shape shape);
// out (float32) = c_skip(sigma) x + c_out(sigma) F for preconditioner `kind` (PrecondKind, precond_codes.h).
void skip_mix(const void* x, DType x_type, const void* F, DType F_type, float* out, Scalars sigma, int kind,
              float sigma_data, Shape shape);
// out = c_in (y + sigma n), in y's dtype (a denoising loss's network input).
void loss_input(const void* y, DType y_type, Noise noise, void* out, Scalars sigma, Scalars c_in, Shape shape);
// With r = c_skip (y + sigma n) + c_out F - y: loss = weight r^2 and grad = dloss/dF = 2 weight c_out r, both float32.
void loss_error(const void* y, DType y_type, const void* F, DType F_type, Noise noise, float* loss, float* grad,
                Scalars sigma, Scalars c_skip, Scalars c_out, Scalars weight, Shape shape);

}  // namespace cpu
}  // namespace fastdiff
