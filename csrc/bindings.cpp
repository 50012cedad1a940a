// The torch-facing layer of the C++ CPU kernels: the fastdiff_cpu operator library.
//
// Inputs are checked here (messages say what was expected), made contiguous, and handed to csrc/cpu/kernels.cpp
// as raw pointers. The op schemas equal the Triton backend's (fastdiff/_triton.py); fake implementations and the
// autograd of skip_mix and loss_error are registered from Python (fastdiff/_compiled.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "binding_utils.h"
#include "cpu/kernels.h"

namespace {

using namespace fastdiff::binding;
using fastdiff::cpu::Noise;
using fastdiff::cpu::Scalars;
using fastdiff::cpu::Shape;
constexpr auto kCPU = c10::DeviceType::CPU;

Shape shape_of(const at::Tensor& t) {
  const auto [batch, per_sample] = batch_shape(t);
  return Shape{batch, per_sample, at::get_num_threads()};
}

Scalars scalars(const at::Tensor& values) { return Scalars{values.data_ptr<float>(), values.numel() > 1}; }

uint64_t offset_of(const at::Tensor& offset) {
  check_offset(offset, kCPU);
  return (uint64_t)offset.item<int64_t>();  // a host tensor: reading it is not a device sync
}

at::Tensor randn(const at::Tensor& seeds, const at::Tensor& offset, c10::SymIntArrayRef shape, at::ScalarType dtype) {
  auto out = at::empty(C10_AS_INTARRAYREF_SLOW(shape), at::TensorOptions().dtype(dtype));
  const Shape s = shape_of(out);
  fastdiff::cpu::randn(out.data_ptr(), dtype_of(out, "dtype"), seeds_of(seeds, s.batch, kCPU), offset_of(offset), s);
  return out;
}

// Each op writes into `out` (checked: contiguous, the result's shape and dtype); `out` may be one of the inputs,
// since every output element depends only on the input elements at its own index. The functional forms below
// (fastdiff::binding::churn<churn_out> and so on) allocate `out` and call these.
void churn_out(const at::Tensor& x_in, const at::Tensor& seeds, const at::Tensor& offset, const at::Tensor& noise_std,
               at::Tensor out) {
  dtype_of(x_in, "x");  // the state's dtype is kept, so it must be one the kernels write
  const at::Tensor x = data(x_in, "x", x_in);
  check_out(out, x, x.scalar_type());
  check_overlap(out, {&x_in});
  const Shape s = shape_of(x);
  const at::Tensor std_values = per_step(noise_std, "noise_std", s.batch, x);
  fastdiff::cpu::churn(x.data_ptr(), out.data_ptr(), dtype_of(x, "x"), seeds_of(seeds, s.batch, kCPU), offset_of(offset),
                       scalars(std_values), s);
}

void euler_step_out(const at::Tensor& x_hat_in, const at::Tensor& denoised_in, const at::Tensor& t_hat,
                    const at::Tensor& t_next, at::Tensor out) {
  dtype_of(x_hat_in, "x_hat");
  const at::Tensor x_hat = data(x_hat_in, "x_hat", x_hat_in), denoised = data(denoised_in, "denoised", x_hat_in);
  check_out(out, x_hat, x_hat.scalar_type());
  check_overlap(out, {&x_hat_in, &denoised_in});
  const Shape s = shape_of(x_hat);
  const at::Tensor th = per_step(t_hat, "t_hat", s.batch, x_hat), tn = per_step(t_next, "t_next", s.batch, x_hat);
  fastdiff::cpu::euler_step(x_hat.data_ptr(), dtype_of(x_hat, "x_hat"), denoised.data_ptr(), dtype_of(denoised, "denoised"),
                            out.data_ptr(), scalars(th), scalars(tn), s);
}

void heun_step_out(const at::Tensor& x_hat_in, const at::Tensor& denoised_in, const at::Tensor& denoised_next_in,
                   const at::Tensor& t_hat, const at::Tensor& t_next, at::Tensor out) {
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
  fastdiff::cpu::heun_step(x_hat.data_ptr(), dtype_of(x_hat, "x_hat"), denoised.data_ptr(), denoised_next.data_ptr(),
                           dtype_of(denoised, "denoised"), out.data_ptr(), scalars(th), scalars(tn), s);
}

void skip_mix_out(const at::Tensor& x_in, const at::Tensor& F_in, const at::Tensor& sigma, int64_t kind, double sigma_data,
                  at::Tensor out) {
  TORCH_CHECK(kind >= 0 && kind <= 2, "kind: expected 0 (EDM), 1 (VP/iDDPM) or 2 (VE), got ", kind);
  const at::Tensor x = data(x_in, "x", x_in), F = data(F_in, "F", x_in);
  check_out(out, x, at::kFloat);
  check_overlap(out, {&x_in, &F_in});
  const Shape s = shape_of(x);
  const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, x);
  fastdiff::cpu::skip_mix(x.data_ptr(), dtype_of(x, "x"), F.data_ptr(), dtype_of(F, "F"), out.data_ptr<float>(),
                          scalars(sigma_values), (int)kind, (float)sigma_data, s);
}

// The loss ops allocate their results (no out= forms). n is the given noise, or drawn from the seeds' streams.
Noise noise_of(const at::Tensor& noise, const at::Tensor& seeds, const at::Tensor& offset, Shape s) {
  return Noise{noise.defined() ? noise.data_ptr() : nullptr, noise.defined() ? dtype_of(noise, "noise") : fastdiff::kFloat32,
               seeds_of(seeds, s.batch, kCPU), offset_of(offset)};
}

at::Tensor loss_input(const at::Tensor& y_in, const at::Tensor& seeds, const at::Tensor& offset,
                      const std::optional<at::Tensor>& noise_in, const at::Tensor& sigma, const at::Tensor& c_in) {
  dtype_of(y_in, "y");  // the result has y's dtype, so it must be one the kernels write
  const at::Tensor y = data(y_in, "y", y_in), noise = given_noise(noise_in, y_in);
  const Shape s = shape_of(y);
  const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, y), c_in_values = per_step(c_in, "c_in", s.batch, y);
  at::Tensor out = empty_result(y, y.scalar_type());
  fastdiff::cpu::loss_input(y.data_ptr(), dtype_of(y, "y"), noise_of(noise, seeds, offset, s), out.data_ptr(),
                            scalars(sigma_values), scalars(c_in_values), s);
  return out;
}

std::tuple<at::Tensor, at::Tensor> loss_error(const at::Tensor& y_in, const at::Tensor& F_in, const at::Tensor& seeds,
                                              const at::Tensor& offset, const std::optional<at::Tensor>& noise_in,
                                              const at::Tensor& sigma, const at::Tensor& c_skip, const at::Tensor& c_out,
                                              const at::Tensor& weight) {
  const at::Tensor y = data(y_in, "y", y_in), F = data(F_in, "F", y_in), noise = given_noise(noise_in, y_in);
  const Shape s = shape_of(y);
  const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, y), c_skip_values = per_step(c_skip, "c_skip", s.batch, y);
  const at::Tensor c_out_values = per_step(c_out, "c_out", s.batch, y), weight_values = per_step(weight, "weight", s.batch, y);
  at::Tensor loss = empty_result(y, at::kFloat), grad = empty_result(y, at::kFloat);
  fastdiff::cpu::loss_error(y.data_ptr(), dtype_of(y, "y"), F.data_ptr(), dtype_of(F, "F"), noise_of(noise, seeds, offset, s),
                            loss.data_ptr<float>(), grad.data_ptr<float>(), scalars(sigma_values), scalars(c_skip_values),
                            scalars(c_out_values), scalars(weight_values), s);
  return {loss, grad};
}

at::Tensor stream_words(const at::Tensor& seeds, int64_t numel_per_sample, const at::Tensor& offset) {
  TORCH_CHECK(numel_per_sample >= 0, "numel_per_sample: expected >= 0, got ", numel_per_sample);
  auto out = at::empty({seeds.numel(), numel_per_sample}, at::TensorOptions().dtype(at::kLong));
  const Shape s{seeds.numel(), numel_per_sample, at::get_num_threads()};
  fastdiff::cpu::stream_words(out.data_ptr<int64_t>(), seeds_of(seeds, s.batch, kCPU), offset_of(offset), s);
  return out;
}

}  // namespace

TORCH_LIBRARY(fastdiff_cpu, m) {
  FASTDIFF_DEFINE_OPS(m);
  m.def("stream_words(Tensor seeds, int numel_per_sample, Tensor offset) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastdiff_cpu, CPU, m) {
  FASTDIFF_IMPL_OPS(m);
  m.impl("stream_words", &stream_words);
}

// Importing fastdiff._C registers the ops above; the module itself has no Python functions.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {}
