// Argument checks and conversions shared by the torch-facing bindings (bindings.cpp, cuda/bindings.cpp).
// Messages name the argument and say what was expected.
#pragma once

#include <ATen/ATen.h>

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
  check_device(t, name, like.device().type());
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
  check_device(out, "out", like.device().type());
  TORCH_CHECK(out.sizes() == like.sizes(), "out: expected the shape ", like.sizes(), ", got ", out.sizes());
  TORCH_CHECK(out.scalar_type() == dtype, "out: expected dtype ", dtype, ", got ", out.scalar_type());
  TORCH_CHECK(out.is_contiguous(), "out: expected a contiguous tensor");
}

inline void check_offset(const at::Tensor& offset, c10::DeviceType device) {
  check_device(offset, "offset", device);
  TORCH_CHECK(offset.scalar_type() == at::kLong && offset.numel() == 1, "offset: expected an int64 tensor of one value");
}

}  // namespace binding
}  // namespace fastdiff
