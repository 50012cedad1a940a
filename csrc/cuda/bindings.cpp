// The torch-facing layer of the CUDA kernels: the fastdiff_cuda operator library (built only with a CUDA torch).
//
// Same schemas as fastdiff_cpu and the Triton ops. Kernels run on the current stream; seeds, the offset and the
// per-step values stay in device memory (nothing is read back to the host).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "../binding_utils.h"
#include "kernels.h"

namespace {

using namespace fastdiff::binding;
using fastdiff::cuda::Noise;
using fastdiff::cuda::Scalars;
using fastdiff::cuda::Shape;
constexpr auto kCUDA = c10::DeviceType::CUDA;

Shape shape_of(const at::Tensor& t) {
  const auto [batch, per_sample] = batch_shape(t);
  return Shape{batch, per_sample};
}

Scalars scalars(const at::Tensor& values) { return Scalars{values.data_ptr<float>(), values.numel() > 1}; }

void check(cudaError_t status, const char* op) {
  TORCH_CHECK(status == cudaSuccess, "fastdiff_cuda::", op, ": kernel launch failed: ", cudaGetErrorString(status));
}

cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

at::Tensor randn(const at::Tensor& seeds, const at::Tensor& offset, c10::SymIntArrayRef shape, at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(seeds.device());
  auto out = at::empty(C10_AS_INTARRAYREF_SLOW(shape), seeds.options().dtype(dtype));
  const Shape s = shape_of(out);
  check_offset(offset, kCUDA);
  check(fastdiff::cuda::randn(out.data_ptr(), dtype_of(out, "dtype"), seeds_of(seeds, s.batch, kCUDA),
                              offset.data_ptr<int64_t>(), s, stream_of(out)), "randn");
  return out;
}

// Each op writes into `out` (checked: contiguous, the result's shape and dtype); `out` may be one of the inputs,
// since every output element depends only on the input elements at its own index.
void churn_out(const at::Tensor& x_in, const at::Tensor& seeds, const at::Tensor& offset, const at::Tensor& noise_std,
               at::Tensor out) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  dtype_of(x_in, "x");
  const at::Tensor x = data(x_in, "x", x_in);
  check_out(out, x, x.scalar_type());
  check_overlap(out, {&x_in});
  const Shape s = shape_of(x);
  check_offset(offset, kCUDA);
  const at::Tensor std_values = per_step(noise_std, "noise_std", s.batch, x);
  check(fastdiff::cuda::churn(x.data_ptr(), out.data_ptr(), dtype_of(x, "x"), seeds_of(seeds, s.batch, kCUDA),
                              offset.data_ptr<int64_t>(), scalars(std_values), s, stream_of(x)), "churn");
}

void euler_step_out(const at::Tensor& x_hat_in, const at::Tensor& denoised_in, const at::Tensor& t_hat,
                    const at::Tensor& t_next, at::Tensor out) {
  const c10::cuda::CUDAGuard guard(x_hat_in.device());
  dtype_of(x_hat_in, "x_hat");
  const at::Tensor x_hat = data(x_hat_in, "x_hat", x_hat_in), denoised = data(denoised_in, "denoised", x_hat_in);
  check_out(out, x_hat, x_hat.scalar_type());
  check_overlap(out, {&x_hat_in, &denoised_in});
  const Shape s = shape_of(x_hat);
  const at::Tensor th = per_step(t_hat, "t_hat", s.batch, x_hat), tn = per_step(t_next, "t_next", s.batch, x_hat);
  check(fastdiff::cuda::euler_step(x_hat.data_ptr(), dtype_of(x_hat, "x_hat"), denoised.data_ptr(),
                                   dtype_of(denoised, "denoised"), out.data_ptr(), scalars(th), scalars(tn), s,
                                   stream_of(x_hat)), "euler_step");
}

void heun_step_out(const at::Tensor& x_hat_in, const at::Tensor& denoised_in, const at::Tensor& denoised_next_in,
                   const at::Tensor& t_hat, const at::Tensor& t_next, at::Tensor out) {
  const c10::cuda::CUDAGuard guard(x_hat_in.device());
  dtype_of(x_hat_in, "x_hat");
  const at::Tensor x_hat = data(x_hat_in, "x_hat", x_hat_in);
  at::Tensor denoised = data(denoised_in, "denoised", x_hat_in);
  at::Tensor denoised_next = data(denoised_next_in, "denoised_next", x_hat_in);
  if (denoised_next.scalar_type() != denoised.scalar_type()) {  // the kernels take one dtype for both
    denoised_next = denoised_next.to(at::kFloat);
    denoised = denoised.to(at::kFloat);
  }
  check_out(out, x_hat, x_hat.scalar_type());
  check_overlap(out, {&x_hat_in, &denoised_in, &denoised_next_in});
  const Shape s = shape_of(x_hat);
  const at::Tensor th = per_step(t_hat, "t_hat", s.batch, x_hat), tn = per_step(t_next, "t_next", s.batch, x_hat);
  check(fastdiff::cuda::heun_step(x_hat.data_ptr(), dtype_of(x_hat, "x_hat"), denoised.data_ptr(), denoised_next.data_ptr(),
                                  dtype_of(denoised, "denoised"), out.data_ptr(), scalars(th), scalars(tn), s,
                                  stream_of(x_hat)), "heun_step");
}

void skip_mix_out(const at::Tensor& x_in, const at::Tensor& F_in, const at::Tensor& sigma, int64_t kind, double sigma_data,
                  at::Tensor out) {
  TORCH_CHECK(kind >= 0 && kind <= 2, "kind: expected 0 (EDM), 1 (VP/iDDPM) or 2 (VE), got ", kind);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = data(x_in, "x", x_in), F = data(F_in, "F", x_in);
  check_out(out, x, at::kFloat);
  check_overlap(out, {&x_in, &F_in});
  const Shape s = shape_of(x);
  const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, x);
  check(fastdiff::cuda::skip_mix(x.data_ptr(), dtype_of(x, "x"), F.data_ptr(), dtype_of(F, "F"), out.data_ptr<float>(),
                                 scalars(sigma_values), (int)kind, (float)sigma_data, s, stream_of(x)), "skip_mix");
}

// The loss ops allocate their results (no out= forms). n is the given noise, or drawn from the seeds' streams.
Noise noise_of(const at::Tensor& noise, const at::Tensor& seeds, const at::Tensor& offset, Shape s) {
  check_offset(offset, kCUDA);
  return Noise{noise.defined() ? noise.data_ptr() : nullptr, noise.defined() ? dtype_of(noise, "noise") : fastdiff::kFloat32,
               seeds_of(seeds, s.batch, kCUDA), offset.data_ptr<int64_t>()};
}

at::Tensor loss_input(const at::Tensor& y_in, const at::Tensor& seeds, const at::Tensor& offset,
                      const std::optional<at::Tensor>& noise_in, const at::Tensor& sigma, const at::Tensor& c_in) {
  const c10::cuda::CUDAGuard guard(y_in.device());
  dtype_of(y_in, "y");  // the result has y's dtype, so it must be one the kernels write
  const at::Tensor y = data(y_in, "y", y_in), noise = given_noise(noise_in, y_in);
  const Shape s = shape_of(y);
  const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, y), c_in_values = per_step(c_in, "c_in", s.batch, y);
  at::Tensor out = empty_result(y, y.scalar_type());
  check(fastdiff::cuda::loss_input(y.data_ptr(), dtype_of(y, "y"), noise_of(noise, seeds, offset, s), out.data_ptr(),
                                   scalars(sigma_values), scalars(c_in_values), s, stream_of(y)), "loss_input");
  return out;
}

std::tuple<at::Tensor, at::Tensor> loss_error(const at::Tensor& y_in, const at::Tensor& F_in, const at::Tensor& seeds,
                                              const at::Tensor& offset, const std::optional<at::Tensor>& noise_in,
                                              const at::Tensor& sigma, const at::Tensor& c_skip, const at::Tensor& c_out,
                                              const at::Tensor& weight) {
  const c10::cuda::CUDAGuard guard(y_in.device());
  const at::Tensor y = data(y_in, "y", y_in), F = data(F_in, "F", y_in), noise = given_noise(noise_in, y_in);
  const Shape s = shape_of(y);
  const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, y), c_skip_values = per_step(c_skip, "c_skip", s.batch, y);
  const at::Tensor c_out_values = per_step(c_out, "c_out", s.batch, y), weight_values = per_step(weight, "weight", s.batch, y);
  at::Tensor loss = empty_result(y, at::kFloat), grad = empty_result(y, at::kFloat);
  check(fastdiff::cuda::loss_error(y.data_ptr(), dtype_of(y, "y"), F.data_ptr(), dtype_of(F, "F"),
                                   noise_of(noise, seeds, offset, s), loss.data_ptr<float>(), grad.data_ptr<float>(),
                                   scalars(sigma_values), scalars(c_skip_values), scalars(c_out_values),
                                   scalars(weight_values), s, stream_of(y)), "loss_error");
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY(fastdiff_cuda, m) {
  FASTDIFF_DEFINE_OPS(m);
}

TORCH_LIBRARY_IMPL(fastdiff_cuda, CUDA, m) {
  FASTDIFF_IMPL_OPS(m);
}

// Importing fastdiff._C_cuda registers the ops above; the module itself has no Python functions.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {}
