// The torch-facing layer of the compiled kernels, written once for every device: the `fastdiff` operator library.
//
// csrc/bindings.cpp (fastdiff._C) defines the op schemas with TORCH_LIBRARY(fastdiff) and registers Ops<Cpu> for
// the CPU dispatch key; csrc/cuda/bindings.cpp (fastdiff._C_cuda, loaded after fastdiff._C) registers Ops<Cuda>
// for the CUDA key. PyTorch's dispatcher then picks the implementation from the inputs' device. The schemas equal
// the Triton backend's (fastdiff/_triton.py); fake implementations and the autograd of skip_mix and loss_error are
// registered from Python (fastdiff/_compiled.py).
//
// Inputs are checked here (messages name the argument and say what was expected), made contiguous, and handed to
// the device's raw-pointer kernels (csrc/cpu/kernels.h, csrc/cuda/kernels.h) through a device policy, a struct
// that provides:
//   type                           the c10::DeviceType its tensors must be on;
//   Shape, Scalars, Noise          its kernels' argument structs (Noise: {ptr, type, seeds, offset});
//   Guard                          constructed from a c10::Device for the duration of an op (a CUDAGuard, or nothing);
//   shape(batch, per_sample)       its kernels' Shape;
//   offset(tensor)                 the stream offset as its kernels take it (a host value, or a device pointer);
//   randn, churn, ... loss_error   its kernels, as function pointers;
//   launch(op, like, kernel, args) calls kernel(args...) for an op on like's device (adding the stream, checking
//                                  the launch's status, on CUDA).
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>

#include "dtypes.h"
#include "precond_codes.h"

namespace fastdiff {
namespace binding {

// ---------------------------------------------------------------------------------------------------------
// Argument checks and conversions (device-independent)
// ---------------------------------------------------------------------------------------------------------

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

// Two denoised tensors one kernel reads (Heun's D and D_next, DPM-Solver's D and D_prev), each as data() reads it,
// both in one dtype: the kernels take a single dtype for the pair, so a mixed pair is read as float32.
inline std::pair<at::Tensor, at::Tensor> denoised_pair(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                                                       const char* b_name, const at::Tensor& like) {
  at::Tensor first = data(a, a_name, like), second = data(b, b_name, like);
  if (first.scalar_type() != second.scalar_type()) {
    first = first.to(at::kFloat);
    second = second.to(at::kFloat);
  }
  return {first, second};
}

// combine's coefficients (a, w0, w1, w2, w3, n) as a contiguous float32 tensor of 6 values on like's device.
inline at::Tensor combine_coeffs(const at::Tensor& coeffs, const at::Tensor& like) {
  check_device(coeffs, "coeffs", like.device().type());
  TORCH_CHECK(at::isFloatingType(coeffs.scalar_type()), "coeffs: expected a floating-point tensor, got ",
              coeffs.scalar_type());
  TORCH_CHECK(coeffs.numel() == 6, "coeffs: expected 6 values (a, w0, w1, w2, w3, n), got ", coeffs.numel());
  return coeffs.to(at::kFloat).contiguous();
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

// ---------------------------------------------------------------------------------------------------------
// The ops, for the device policy Device
// ---------------------------------------------------------------------------------------------------------

template <class Device>
struct Ops {
  using Shape = typename Device::Shape;
  using Scalars = typename Device::Scalars;
  using Noise = typename Device::Noise;
  using Guard = typename Device::Guard;
  static constexpr c10::DeviceType kDevice = Device::type;

  static Shape shape_of(const at::Tensor& t) {
    const auto [batch, per_sample] = batch_shape(t);
    return Device::shape(batch, per_sample);
  }

  static Scalars scalars(const at::Tensor& values) { return Scalars{values.data_ptr<float>(), values.numel() > 1}; }

  static auto offset_of(const at::Tensor& offset) {
    check_offset(offset, kDevice);
    return Device::offset(offset);
  }

  // A loss's noise n: the given tensor, or the seeds' streams at the offset.
  static Noise noise_of(const at::Tensor& noise, const at::Tensor& seeds, const at::Tensor& offset, Shape s) {
    return Noise{noise.defined() ? noise.data_ptr() : nullptr, noise.defined() ? dtype_of(noise, "noise") : kFloat32,
                 seeds_of(seeds, s.batch, kDevice), offset_of(offset)};
  }

  static at::Tensor randn(const at::Tensor& seeds, const at::Tensor& offset, c10::SymIntArrayRef shape,
                          at::ScalarType dtype) {
    check_device(seeds, "seeds", kDevice);
    const Guard guard(seeds.device());
    at::Tensor out = at::empty(C10_AS_INTARRAYREF_SLOW(shape), seeds.options().dtype(dtype));
    const Shape s = shape_of(out);
    Device::launch("randn", out, Device::randn, out.data_ptr(), dtype_of(out, "dtype"), seeds_of(seeds, s.batch, kDevice),
                   offset_of(offset), s);
    return out;
  }

  // Each out= op writes into `out` (checked: contiguous, the result's shape and dtype); `out` may be one of the
  // inputs, since every output element depends only on the input elements at its own index.
  static void churn_out(const at::Tensor& x_in, const at::Tensor& seeds, const at::Tensor& offset,
                        const at::Tensor& noise_std, at::Tensor out) {
    const Guard guard(x_in.device());
    dtype_of(x_in, "x");  // the state's dtype is kept, so it must be one the kernels write
    const at::Tensor x = data(x_in, "x", x_in);
    check_out(out, x, x.scalar_type());
    check_overlap(out, {&x_in});
    const Shape s = shape_of(x);
    const at::Tensor std_values = per_step(noise_std, "noise_std", s.batch, x);
    Device::launch("churn", x, Device::churn, x.data_ptr(), out.data_ptr(), dtype_of(x, "x"),
                   seeds_of(seeds, s.batch, kDevice), offset_of(offset), scalars(std_values), s);
  }

  static void euler_step_out(const at::Tensor& x_hat_in, const at::Tensor& denoised_in, const at::Tensor& t_hat,
                             const at::Tensor& t_next, at::Tensor out) {
    const Guard guard(x_hat_in.device());
    dtype_of(x_hat_in, "x_hat");
    const at::Tensor x_hat = data(x_hat_in, "x_hat", x_hat_in), denoised = data(denoised_in, "denoised", x_hat_in);
    check_out(out, x_hat, x_hat.scalar_type());
    check_overlap(out, {&x_hat_in, &denoised_in});
    const Shape s = shape_of(x_hat);
    const at::Tensor th = per_step(t_hat, "t_hat", s.batch, x_hat), tn = per_step(t_next, "t_next", s.batch, x_hat);
    Device::launch("euler_step", x_hat, Device::euler_step, x_hat.data_ptr(), dtype_of(x_hat, "x_hat"),
                   denoised.data_ptr(), dtype_of(denoised, "denoised"), out.data_ptr(), scalars(th), scalars(tn), s);
  }

  static void heun_step_out(const at::Tensor& x_hat_in, const at::Tensor& denoised_in, const at::Tensor& denoised_next_in,
                            const at::Tensor& t_hat, const at::Tensor& t_next, at::Tensor out) {
    const Guard guard(x_hat_in.device());
    dtype_of(x_hat_in, "x_hat");
    const at::Tensor x_hat = data(x_hat_in, "x_hat", x_hat_in);
    const auto [denoised, denoised_next] = denoised_pair(denoised_in, "denoised", denoised_next_in, "denoised_next",
                                                         x_hat_in);
    check_out(out, x_hat, x_hat.scalar_type());
    check_overlap(out, {&x_hat_in, &denoised_in, &denoised_next_in});
    const Shape s = shape_of(x_hat);
    const at::Tensor th = per_step(t_hat, "t_hat", s.batch, x_hat), tn = per_step(t_next, "t_next", s.batch, x_hat);
    Device::launch("heun_step", x_hat, Device::heun_step, x_hat.data_ptr(), dtype_of(x_hat, "x_hat"), denoised.data_ptr(),
                   denoised_next.data_ptr(), dtype_of(denoised, "denoised"), out.data_ptr(), scalars(th), scalars(tn), s);
  }

  static void multistep_step_out(const at::Tensor& x_in, const at::Tensor& denoised_in,
                                 const at::Tensor& denoised_prev_in, const at::Tensor& c, const at::Tensor& t,
                                 const at::Tensor& t_next, at::Tensor out) {
    const Guard guard(x_in.device());
    dtype_of(x_in, "x");
    const at::Tensor x = data(x_in, "x", x_in);
    const auto [denoised, denoised_prev] = denoised_pair(denoised_in, "denoised", denoised_prev_in, "denoised_prev",
                                                         x_in);
    check_out(out, x, x.scalar_type());
    check_overlap(out, {&x_in, &denoised_in, &denoised_prev_in});
    const Shape s = shape_of(x);
    const at::Tensor cv = per_step(c, "c", s.batch, x), tv = per_step(t, "t", s.batch, x);
    const at::Tensor tn = per_step(t_next, "t_next", s.batch, x);
    Device::launch("multistep_step", x, Device::multistep_step, x.data_ptr(), dtype_of(x, "x"), denoised.data_ptr(),
                   denoised_prev.data_ptr(), dtype_of(denoised, "denoised"), out.data_ptr(), scalars(cv), scalars(tv),
                   scalars(tn), s);
  }

  // combine: h0..h3 and the noise are optional; the present h's are read in one dtype (float32 when they differ, as
  // denoised_pair does), the noise in its own. z is the given noise, the seeds' streams at the offset, or absent.
  static void combine_out(const at::Tensor& x_in, const std::optional<at::Tensor>& h0,
                          const std::optional<at::Tensor>& h1, const std::optional<at::Tensor>& h2,
                          const std::optional<at::Tensor>& h3, const at::Tensor& coeffs,
                          const std::optional<at::Tensor>& seeds, const std::optional<at::Tensor>& offset,
                          const std::optional<at::Tensor>& noise_in, at::Tensor out) {
    TORCH_CHECK(!(seeds.has_value() && noise_in.has_value()),
                "seeds, noise: expected one source of noise, seeds (drawn in the kernel) or noise (a tensor), got both");
    TORCH_CHECK(!seeds.has_value() || offset.has_value(), "offset: expected an int64 tensor of one value with seeds, "
                "got None");
    const Guard guard(x_in.device());
    dtype_of(x_in, "x");
    const at::Tensor x = data(x_in, "x", x_in), noise = given_noise(noise_in, x_in);
    const std::optional<at::Tensor>* given[4] = {&h0, &h1, &h2, &h3};
    static const char* const names[4] = {"h0", "h1", "h2", "h3"};
    at::Tensor h[4];
    int first = -1;  // the first present h
    bool mixed = false;
    for (int k = 0; k < 4; ++k) {
      if (!given[k]->has_value()) continue;
      h[k] = data(**given[k], names[k], x_in);
      mixed = mixed || (first >= 0 && h[k].scalar_type() != h[first].scalar_type());
      first = first < 0 ? k : first;
    }
    const void* h_ptrs[4] = {nullptr, nullptr, nullptr, nullptr};
    for (int k = 0; k < 4; ++k) {
      if (!h[k].defined()) continue;
      if (mixed) h[k] = h[k].to(at::kFloat);
      h_ptrs[k] = h[k].data_ptr();
    }
    const DType h_type = first < 0 ? kFloat32 : dtype_of(h[first], names[first]);
    check_out(out, x, x.scalar_type());
    check_overlap(out, {&x_in});
    for (const std::optional<at::Tensor>* input : {&h0, &h1, &h2, &h3, &noise_in})
      if (input->has_value()) at::assert_no_partial_overlap(out, **input);
    const Shape s = shape_of(x);
    const at::Tensor c = combine_coeffs(coeffs, x);
    const Noise z = seeds.has_value() ? noise_of(noise, *seeds, *offset, s)
                                      : Noise{noise.defined() ? noise.data_ptr() : nullptr,
                                              noise.defined() ? dtype_of(noise, "noise") : kFloat32, nullptr, {}};
    Device::launch("combine", x, Device::combine, x.data_ptr(), dtype_of(x, "x"), h_ptrs, h_type, z,
                   c.data_ptr<float>(), out.data_ptr(), s);
  }

  static void skip_mix_out(const at::Tensor& x_in, const at::Tensor& F_in, const at::Tensor& sigma, int64_t kind,
                           double sigma_data, at::Tensor out) {
    TORCH_CHECK(kind == kEDM || kind == kVP || kind == kVE, "kind: expected ", int(kEDM), " (EDM), ", int(kVP),
                " (VP/iDDPM) or ", int(kVE), " (VE), got ", kind);
    const Guard guard(x_in.device());
    const at::Tensor x = data(x_in, "x", x_in), F = data(F_in, "F", x_in);
    check_out(out, x, at::kFloat);
    check_overlap(out, {&x_in, &F_in});
    const Shape s = shape_of(x);
    const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, x);
    Device::launch("skip_mix", x, Device::skip_mix, x.data_ptr(), dtype_of(x, "x"), F.data_ptr(), dtype_of(F, "F"),
                   out.data_ptr<float>(), scalars(sigma_values), (int)kind, (float)sigma_data, s);
  }

  // The functional forms: allocate `out`, then run the out= form.
  static at::Tensor churn(const at::Tensor& x, const at::Tensor& seeds, const at::Tensor& offset,
                          const at::Tensor& noise_std) {
    at::Tensor out = empty_result(x, x.scalar_type());
    churn_out(x, seeds, offset, noise_std, out);
    return out;
  }

  static at::Tensor euler_step(const at::Tensor& x_hat, const at::Tensor& denoised, const at::Tensor& t_hat,
                               const at::Tensor& t_next) {
    at::Tensor out = empty_result(x_hat, x_hat.scalar_type());
    euler_step_out(x_hat, denoised, t_hat, t_next, out);
    return out;
  }

  static at::Tensor heun_step(const at::Tensor& x_hat, const at::Tensor& denoised, const at::Tensor& denoised_next,
                              const at::Tensor& t_hat, const at::Tensor& t_next) {
    at::Tensor out = empty_result(x_hat, x_hat.scalar_type());
    heun_step_out(x_hat, denoised, denoised_next, t_hat, t_next, out);
    return out;
  }

  static at::Tensor multistep_step(const at::Tensor& x, const at::Tensor& denoised, const at::Tensor& denoised_prev,
                                   const at::Tensor& c, const at::Tensor& t, const at::Tensor& t_next) {
    at::Tensor out = empty_result(x, x.scalar_type());
    multistep_step_out(x, denoised, denoised_prev, c, t, t_next, out);
    return out;
  }

  static at::Tensor combine(const at::Tensor& x, const std::optional<at::Tensor>& h0, const std::optional<at::Tensor>& h1,
                            const std::optional<at::Tensor>& h2, const std::optional<at::Tensor>& h3,
                            const at::Tensor& coeffs, const std::optional<at::Tensor>& seeds,
                            const std::optional<at::Tensor>& offset, const std::optional<at::Tensor>& noise) {
    at::Tensor out = empty_result(x, x.scalar_type());
    combine_out(x, h0, h1, h2, h3, coeffs, seeds, offset, noise, out);
    return out;
  }

  static at::Tensor skip_mix(const at::Tensor& x, const at::Tensor& F, const at::Tensor& sigma, int64_t kind,
                             double sigma_data) {
    at::Tensor out = empty_result(x, at::kFloat);
    skip_mix_out(x, F, sigma, kind, sigma_data, out);
    return out;
  }

  // The loss ops allocate their results (no out= forms). n is the given noise, or drawn from the seeds' streams.
  static at::Tensor loss_input(const at::Tensor& y_in, const at::Tensor& seeds, const at::Tensor& offset,
                               const std::optional<at::Tensor>& noise_in, const at::Tensor& sigma, const at::Tensor& c_in) {
    const Guard guard(y_in.device());
    dtype_of(y_in, "y");  // the result has y's dtype, so it must be one the kernels write
    const at::Tensor y = data(y_in, "y", y_in), noise = given_noise(noise_in, y_in);
    const Shape s = shape_of(y);
    const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, y), c_in_values = per_step(c_in, "c_in", s.batch, y);
    at::Tensor out = empty_result(y, y.scalar_type());
    Device::launch("loss_input", y, Device::loss_input, y.data_ptr(), dtype_of(y, "y"), noise_of(noise, seeds, offset, s),
                   out.data_ptr(), scalars(sigma_values), scalars(c_in_values), s);
    return out;
  }

  static std::tuple<at::Tensor, at::Tensor> loss_error(const at::Tensor& y_in, const at::Tensor& F_in,
                                                       const at::Tensor& seeds, const at::Tensor& offset,
                                                       const std::optional<at::Tensor>& noise_in, const at::Tensor& sigma,
                                                       const at::Tensor& c_skip, const at::Tensor& c_out,
                                                       const at::Tensor& weight) {
    const Guard guard(y_in.device());
    const at::Tensor y = data(y_in, "y", y_in), F = data(F_in, "F", y_in), noise = given_noise(noise_in, y_in);
    const Shape s = shape_of(y);
    const at::Tensor sigma_values = per_step(sigma, "sigma", s.batch, y), c_skip_values = per_step(c_skip, "c_skip", s.batch, y);
    const at::Tensor c_out_values = per_step(c_out, "c_out", s.batch, y), weight_values = per_step(weight, "weight", s.batch, y);
    at::Tensor loss = empty_result(y, at::kFloat), grad = empty_result(y, at::kFloat);
    Device::launch("loss_error", y, Device::loss_error, y.data_ptr(), dtype_of(y, "y"), F.data_ptr(), dtype_of(F, "F"),
                   noise_of(noise, seeds, offset, s), loss.data_ptr<float>(), grad.data_ptr<float>(),
                   scalars(sigma_values), scalars(c_skip_values), scalars(c_out_values), scalars(weight_values), s);
    return {loss, grad};
  }

  // Registers the ops above for Device's dispatch key: called in the device's TORCH_LIBRARY_IMPL(fastdiff, ...).
  static void register_impls(torch::Library& m) {
    m.impl("randn", &randn);
    m.impl("churn", &churn);
    m.impl("euler_step", &euler_step);
    m.impl("heun_step", &heun_step);
    m.impl("multistep_step", &multistep_step);
    m.impl("combine", &combine);
    m.impl("skip_mix", &skip_mix);
    m.impl("churn_out", &churn_out);
    m.impl("euler_step_out", &euler_step_out);
    m.impl("heun_step_out", &heun_step_out);
    m.impl("multistep_step_out", &multistep_step_out);
    m.impl("combine_out", &combine_out);
    m.impl("skip_mix_out", &skip_mix_out);
    m.impl("loss_input", &loss_input);
    m.impl("loss_error", &loss_error);
  }
};

}  // namespace binding
}  // namespace fastdiff
