// fastdiff._C_cuda: the CUDA implementations of the `fastdiff` ops (built only with a CUDA torch).
//
// The schemas are defined by fastdiff._C (csrc/bindings.cpp), which is loaded first; the op bindings are written
// once, in binding.h. This file holds the CUDA policy: the csrc/cuda kernels run on the current stream of the
// inputs' device, and seeds, the offset and the per-step values stay in device memory (nothing is read back to
// the host). It is compiled by the host compiler: the kernels themselves are in kernels.cu.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "../binding.h"
#include "kernels.h"

namespace {

struct Cuda {
  static constexpr c10::DeviceType type = c10::DeviceType::CUDA;
  using Shape = fastdiff::cuda::Shape;
  using Scalars = fastdiff::cuda::Scalars;
  using Noise = fastdiff::cuda::Noise;
  using Guard = c10::cuda::CUDAGuard;

  static Shape shape(int64_t batch, int64_t per_sample) { return Shape{batch, per_sample}; }
  static const int64_t* offset(const at::Tensor& offset) { return offset.data_ptr<int64_t>(); }  // read on the device

  static constexpr auto randn = &fastdiff::cuda::randn;
  static constexpr auto churn = &fastdiff::cuda::churn;
  static constexpr auto euler_step = &fastdiff::cuda::euler_step;
  static constexpr auto heun_step = &fastdiff::cuda::heun_step;
  static constexpr auto multistep_step = &fastdiff::cuda::multistep_step;
  static constexpr auto combine = &fastdiff::cuda::combine;
  static constexpr auto skip_mix = &fastdiff::cuda::skip_mix;
  static constexpr auto loss_input = &fastdiff::cuda::loss_input;
  static constexpr auto loss_error = &fastdiff::cuda::loss_error;

  template <class Kernel, class... Args>
  static void launch(const char* op, const at::Tensor& like, Kernel kernel, Args&&... args) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
    const cudaError_t status = kernel(std::forward<Args>(args)..., stream);
    TORCH_CHECK(status == cudaSuccess, "fastdiff::", op, ": kernel launch failed: ", cudaGetErrorString(status));
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(fastdiff, CUDA, m) { fastdiff::binding::Ops<Cuda>::register_impls(m); }

// Importing fastdiff._C_cuda registers the kernels above; the module itself has no Python functions.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {}
