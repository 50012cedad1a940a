// The element types fastdiff's compiled kernels read and write (shared by the CPU and CUDA launchers).
#pragma once

namespace fastdiff {

enum DType { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace fastdiff
