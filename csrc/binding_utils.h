// Argument checks and conversions shared by the torch-facing bindings (bindings.cpp, cuda/bindings.cpp).
// Messages name the argument and say what was expected.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include "dtypes.h"

namespace fastdiff {
namespace binding {

inline DType dtype_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return kFloat32;
    case at::kHalf: return kFloat16;
    case at::kBFloat16: return kBFloat16;
    default: TORCH_CHECK(false, name, ": expected a float32, float16 or bfloat16 tensor, got ", t.scalar_type());
  }
}

inline void check_device(const at::Tensor& t, const char* name, c10::DeviceType device) {
  TORCH_CHECK(t.device().type() == device, name, ": expected a ", c10::DeviceTypeName(device), " tensor, got one on ",
              t.device());
}

// A data tensor the kernels read: like's shape, contiguous, float32 if it came in a dtype they do not read.
inline at::Tensor data(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device(), name, ": expected a tensor on ", like.device(), ", got one on ", t.device());
  TORCH_CHECK(t.sizes() == like.sizes(), name, ": expected the shape ", like.sizes(), ", got ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name, ": expected a floating-point tensor, got ", t.scalar_type());
  const bool readable = t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
  return (readable ? t : t.to(at::kFloat)).contiguous();
}

// (batch, elements per sample) of a [B, ...] tensor.
inline std::pair<int64_t, int64_t> batch_shape(const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1, "expected a tensor of shape [B, ...], got a 0-d tensor");
  const int64_t batch = t.size(0);
  return {batch, batch ? t.numel() / batch : 0};
}

// A per-step value as a float32 tensor of one value or one per sample, on like's device.
inline at::Tensor per_step(const at::Tensor& t, const char* name, int64_t batch, const at::Tensor& like) {
  check_device(t, name, like.device().type());
  TORCH_CHECK(t.numel() == 1 || t.numel() == batch, name, ": expected one value or one per sample (", batch, "), got ",
              t.numel());
  return t.to(at::kFloat).contiguous();
}

inline const int64_t* seeds_of(const at::Tensor& seeds, int64_t batch, c10::DeviceType device) {
  check_device(seeds, "seeds", device);
  TORCH_CHECK(seeds.scalar_type() == at::kLong && seeds.dim() == 1 && seeds.numel() == batch,
              "seeds: expected an int64 tensor of one seed per sample (", batch, ")");
  TORCH_CHECK(seeds.is_contiguous(), "seeds: expected a contiguous tensor");
  return seeds.data_ptr<int64_t>();
}

// An output tensor the kernels write: contiguous, of like's shape and device, of `dtype`.
inline void check_out(const at::Tensor& out, const at::Tensor& like, at::ScalarType dtype) {
  TORCH_CHECK(out.device() == like.device(), "out: expected a tensor on ", like.device(), ", got one on ", out.device());
  TORCH_CHECK(out.sizes() == like.sizes(), "out: expected the shape ", like.sizes(), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == dtype, "out: expected dtype ", dtype, ", got ", out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "out: expected a contiguous tensor");
}

// out may be an input itself (every op is elementwise) but must not overlap one at other elements.
inline void check_overlap(const at::Tensor& out, std::initializer_list<const at::Tensor*> inputs) {
  at::assert_no_internal_overlap(out);
  for (const at::Tensor* input : inputs) at::assert_no_partial_overlap(out, *input);
}

// A loss op's noise: like's shape and device, contiguous, float32 if it came in a dtype the kernels do not read;
// undefined when none was given (the kernels then draw it from the seeds' streams).
inline at::Tensor given_noise(const std::optional<at::Tensor>& noise, const at::Tensor& like) {
  return noise.has_value() ? data(*noise, "noise", like) : at::Tensor();
}

inline void check_offset(const at::Tensor& offset, c10::DeviceType device) {
  check_device(offset, "offset", device);
  TORCH_CHECK(offset.scalar_type() == at::kLong && offset.numel() == 1, "offset: expected an int64 tensor of one value");
}

// The functional form of an op, from its out= form: allocate the result, then write into it.
inline at::Tensor empty_result(const at::Tensor& like, at::ScalarType dtype) {
  return at::empty(like.sizes(), like.options().dtype(dtype));
}

template <auto ChurnOut>
at::Tensor churn(const at::Tensor& x, const at::Tensor& seeds, const at::Tensor& offset, const at::Tensor& noise_std) {
  at::Tensor out = empty_result(x, x.scalar_type());
  ChurnOut(x, seeds, offset, noise_std, out);
  return out;
}

template <auto EulerOut>
at::Tensor euler_step(const at::Tensor& x_hat, const at::Tensor& denoised, const at::Tensor& t_hat, const at::Tensor& t_next) {
  at::Tensor out = empty_result(x_hat, x_hat.scalar_type());
  EulerOut(x_hat, denoised, t_hat, t_next, out);
  return out;
}

template <auto HeunOut>
at::Tensor heun_step(const at::Tensor& x_hat, const at::Tensor& denoised, const at::Tensor& denoised_next,
                     const at::Tensor& t_hat, const at::Tensor& t_next) {
  at::Tensor out = empty_result(x_hat, x_hat.scalar_type());
  HeunOut(x_hat, denoised, denoised_next, t_hat, t_next, out);
  return out;
}

template <auto SkipMixOut>
at::Tensor skip_mix(const at::Tensor& x, const at::Tensor& F, const at::Tensor& sigma, int64_t kind, double sigma_data) {
  at::Tensor out = empty_result(x, at::kFloat);
  SkipMixOut(x, F, sigma, kind, sigma_data, out);
  return out;
}

}  // namespace binding
}  // namespace fastdiff

// The op schemas every compiled backend's library defines (the Triton ops in fastdiff/_triton.py match them).
#define FASTDIFF_DEFINE_OPS(m)                                                                                        \
  m.def("randn(Tensor seeds, Tensor offset, SymInt[] shape, ScalarType dtype) -> Tensor");                         \
  m.def("churn(Tensor x, Tensor seeds, Tensor offset, Tensor noise_std) -> Tensor");                                \
  m.def("euler_step(Tensor x_hat, Tensor denoised, Tensor t_hat, Tensor t_next) -> Tensor");                        \
  m.def("heun_step(Tensor x_hat, Tensor denoised, Tensor denoised_next, Tensor t_hat, Tensor t_next) -> Tensor");   \
  m.def("skip_mix(Tensor x, Tensor F, Tensor sigma, int kind, float sigma_data) -> Tensor");                        \
  m.def("churn_out(Tensor x, Tensor seeds, Tensor offset, Tensor noise_std, Tensor(a!) out) -> ()");                \
  m.def("euler_step_out(Tensor x_hat, Tensor denoised, Tensor t_hat, Tensor t_next, Tensor(a!) out) -> ()");        \
  m.def("heun_step_out(Tensor x_hat, Tensor denoised, Tensor denoised_next, Tensor t_hat, Tensor t_next, "          \
        "Tensor(a!) out) -> ()");                                                                                    \
  m.def("skip_mix_out(Tensor x, Tensor F, Tensor sigma, int kind, float sigma_data, Tensor(a!) out) -> ()");       \
  m.def("loss_input(Tensor y, Tensor seeds, Tensor offset, Tensor? noise, Tensor sigma, Tensor c_in) -> Tensor");  \
  m.def("loss_error(Tensor y, Tensor F, Tensor seeds, Tensor offset, Tensor? noise, Tensor sigma, Tensor c_skip, " \
        "Tensor c_out, Tensor weight) -> (Tensor, Tensor)")

// Their implementations, given the backend's randn, out= and loss functions.
#define FASTDIFF_IMPL_OPS(m)                                                               \
  m.impl("randn", &randn);                                                                 \
  m.impl("churn", &fastdiff::binding::churn<churn_out>);                                   \
  m.impl("euler_step", &fastdiff::binding::euler_step<euler_step_out>);                    \
  m.impl("heun_step", &fastdiff::binding::heun_step<heun_step_out>);                       \
  m.impl("skip_mix", &fastdiff::binding::skip_mix<skip_mix_out>);                          \
  m.impl("churn_out", &churn_out);                                                         \
  m.impl("euler_step_out", &euler_step_out);                                               \
  m.impl("heun_step_out", &heun_step_out);                                                 \
  m.impl("skip_mix_out", &skip_mix_out);                                                   \
  m.impl("loss_input", &loss_input);                                                       \
  m.impl("loss_error", &loss_error)
