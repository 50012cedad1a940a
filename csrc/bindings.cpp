// fastdiff._C: defines the `fastdiff` operator library (every op's schema) and its CPU implementations.
//
// The op bindings are written once, in binding.h, for a device policy; this file holds the CPU policy (the
// csrc/cpu kernels, on at::get_num_threads() threads) and the library's schemas, which the CUDA part
// (csrc/cuda/bindings.cpp) implements for CUDA tensors. stream_words, a test op, exists on the CPU only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "binding.h"
#include "cpu/kernels.h"

namespace {

using namespace fastdiff::binding;

struct Cpu {
  static constexpr c10::DeviceType type = c10::DeviceType::CPU;
  using Shape = fastdiff::cpu::Shape;
  using Scalars = fastdiff::cpu::Scalars;
  using Noise = fastdiff::cpu::Noise;
  struct Guard {  // CPU ops need no device context
    explicit Guard(c10::Device) {}
  };

  static Shape shape(int64_t batch, int64_t per_sample) { return Shape{batch, per_sample, at::get_num_threads()}; }
  static uint64_t offset(const at::Tensor& offset) {
    return (uint64_t)offset.item<int64_t>();  // a host tensor: reading it is not a device sync
  }

  static constexpr auto randn = &fastdiff::cpu::randn;
  static constexpr auto churn = &fastdiff::cpu::churn;
  static constexpr auto euler_step = &fastdiff::cpu::euler_step;
  static constexpr auto heun_step = &fastdiff::cpu::heun_step;
  static constexpr auto multistep_step = &fastdiff::cpu::multistep_step;
  static constexpr auto combine = &fastdiff::cpu::combine;
  static constexpr auto skip_mix = &fastdiff::cpu::skip_mix;
  static constexpr auto loss_input = &fastdiff::cpu::loss_input;
  static constexpr auto loss_error = &fastdiff::cpu::loss_error;

  template <class Kernel, class... Args>
  static void launch(const char* /*op*/, const at::Tensor& /*like*/, Kernel kernel, Args&&... args) {
    kernel(std::forward<Args>(args)...);
  }
};

using CpuOps = Ops<Cpu>;

at::Tensor stream_words(const at::Tensor& seeds, int64_t numel_per_sample, const at::Tensor& offset) {
  TORCH_CHECK(numel_per_sample >= 0, "numel_per_sample: expected >= 0, got ", numel_per_sample);
  auto out = at::empty({seeds.numel(), numel_per_sample}, at::TensorOptions().dtype(at::kLong));
  const Cpu::Shape s = Cpu::shape(seeds.numel(), numel_per_sample);
  fastdiff::cpu::stream_words(out.data_ptr<int64_t>(), seeds_of(seeds, s.batch, Cpu::type), CpuOps::offset_of(offset), s);
  return out;
}

}  // namespace

// The one definition of the ops' schemas (the Triton ops in fastdiff/_triton.py have the same ones).
TORCH_LIBRARY(fastdiff, m) {
  m.def("randn(Tensor seeds, Tensor offset, SymInt[] shape, ScalarType dtype) -> Tensor");
  m.def("churn(Tensor x, Tensor seeds, Tensor offset, Tensor noise_std) -> Tensor");
  m.def("euler_step(Tensor x_hat, Tensor denoised, Tensor t_hat, Tensor t_next) -> Tensor");
  m.def("heun_step(Tensor x_hat, Tensor denoised, Tensor denoised_next, Tensor t_hat, Tensor t_next) -> Tensor");
  m.def("multistep_step(Tensor x, Tensor denoised, Tensor denoised_prev, Tensor c, Tensor t, Tensor t_next) -> Tensor");
  m.def("combine(Tensor x, Tensor? h0, Tensor? h1, Tensor? h2, Tensor? h3, Tensor coeffs, Tensor? seeds, "
        "Tensor? offset, Tensor? noise) -> Tensor");
  m.def("skip_mix(Tensor x, Tensor F, Tensor sigma, int kind, float sigma_data) -> Tensor");
  m.def("churn_out(Tensor x, Tensor seeds, Tensor offset, Tensor noise_std, Tensor(a!) out) -> ()");
  m.def("euler_step_out(Tensor x_hat, Tensor denoised, Tensor t_hat, Tensor t_next, Tensor(a!) out) -> ()");
  m.def("heun_step_out(Tensor x_hat, Tensor denoised, Tensor denoised_next, Tensor t_hat, Tensor t_next, "
        "Tensor(a!) out) -> ()");
  m.def("multistep_step_out(Tensor x, Tensor denoised, Tensor denoised_prev, Tensor c, Tensor t, Tensor t_next, "
        "Tensor(a!) out) -> ()");
  m.def("combine_out(Tensor x, Tensor? h0, Tensor? h1, Tensor? h2, Tensor? h3, Tensor coeffs, Tensor? seeds, "
        "Tensor? offset, Tensor? noise, Tensor(a!) out) -> ()");
  m.def("skip_mix_out(Tensor x, Tensor F, Tensor sigma, int kind, float sigma_data, Tensor(a!) out) -> ()");
  m.def("loss_input(Tensor y, Tensor seeds, Tensor offset, Tensor? noise, Tensor sigma, Tensor c_in) -> Tensor");
  m.def("loss_error(Tensor y, Tensor F, Tensor seeds, Tensor offset, Tensor? noise, Tensor sigma, Tensor c_skip, "
        "Tensor c_out, Tensor weight) -> (Tensor, Tensor)");
  m.def("stream_words(Tensor seeds, int numel_per_sample, Tensor offset) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastdiff, CPU, m) {
  CpuOps::register_impls(m);
  m.impl("stream_words", &stream_words);
}

// Importing fastdiff._C registers the ops above; the module itself has no Python functions.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {}
