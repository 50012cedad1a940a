// fastdiff's CUDA kernels: raw-pointer launchers, no torch (csrc/cuda/bindings.cpp holds the torch code), so that
// nvcc compiles kernels.cu on its own (CI does, for sm_80 and sm_90, and checks ptxas for spills).
//
// Tensors are contiguous [batch, per_sample]; per-step values are float32 device arrays of one value or one per
// sample; seeds (int64 [batch]) and the stream offset (int64, one value) are read from device memory, so no
// per-call value is baked into a launch.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "../dtypes.h"

namespace fastdiff {
namespace cuda {

using ::fastdiff::DType;

struct Scalars {
  const float* ptr;  // device memory
  bool per_sample;
};

struct Shape {
  int64_t batch;
  int64_t per_sample;
};

// A loss's noise n: the tensor at ptr (of `type`, contiguous, the data's shape) when ptr is not null, else the
// normals of each sample's seed at *offset (element e of sample b is lane e % 4 of block e / 4, as churn's eps).
struct Noise {
  const void* ptr;  // device memory, or null
  DType type;
  const int64_t* seeds;   // device memory
  const int64_t* offset;  // device memory
};

cudaError_t randn(void* out, DType out_type, const int64_t* seeds, const int64_t* offset, Shape shape, cudaStream_t stream);
cudaError_t churn(const void* x, void* out, DType x_type, const int64_t* seeds, const int64_t* offset, Scalars noise_std,
                  Shape shape, cudaStream_t stream);
cudaError_t euler_step(const void* x_hat, DType x_type, const void* denoised, DType d_type, void* out, Scalars t_hat,
                       Scalars t_next, Shape shape, cudaStream_t stream);
cudaError_t heun_step(const void* x_hat, DType x_type, const void* denoised, const void* denoised_next, DType d_type,
                      void* out, Scalars t_hat, Scalars t_next, Shape shape, cudaStream_t stream);
// out = D' + (t_next / t) (x - D') with D' = D + c (D - D_prev), in x's dtype (DPM-Solver++(2M)'s step).
cudaError_t multistep_step(const void* x, DType x_type, const void* denoised, const void* denoised_prev, DType d_type,
                           void* out, Scalars c, Scalars t, Scalars t_next, Shape shape, cudaStream_t stream);
// out = a x + w0 h[0] + w1 h[1] + w2 h[2] + w3 h[3] + n z in x's dtype with (a, w0, w1, w2, w3, n) = coeffs[0..5]
// (float32, device memory): a solver's update. h[k] null: term k is absent and its weight not read; the present h's
// are of h_type. z is the given noise (noise.ptr), the stream's normals (noise.seeds, at *noise.offset), or absent
// when both are null.
cudaError_t combine(const void* x, DType x_type, const void* const h[4], DType h_type, Noise noise, const float* coeffs,
                    void* out, Shape shape, cudaStream_t stream);
cudaError_t skip_mix(const void* x, DType x_type, const void* F, DType F_type, float* out, Scalars sigma, int kind,
                     float sigma_data, Shape shape, cudaStream_t stream);
// out = c_in (y + sigma n) in y's dtype; loss = weight r^2 and grad = 2 weight c_out r (float32) with
// r = c_skip (y + sigma n) + c_out F - y.
cudaError_t loss_input(const void* y, DType y_type, Noise noise, void* out, Scalars sigma, Scalars c_in, Shape shape,
                       cudaStream_t stream);
cudaError_t loss_error(const void* y, DType y_type, const void* F, DType F_type, Noise noise, float* loss, float* grad,
                       Scalars sigma, Scalars c_skip, Scalars c_out, Scalars weight, Shape shape, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastdiff
