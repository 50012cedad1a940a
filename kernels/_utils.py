"""Small device and host helpers shared by the kernel files."""
import triton
import triton.language as tl

BLOCK = 1024  # elements per program: 8 fp32 per thread at 4 warps, two 128-bit accesses per tensor
NUM_WARPS = 4
# Launch options pinned rather than left to Triton's defaults, which change between releases (3.10 turns
# fp fusion off by default): fused multiply-adds are kept, as the kernels' tolerances assume.
LAUNCH_OPTIONS = dict(num_warps=NUM_WARPS, enable_fp_fusion=True)


@triton.jit
def load_per_sample(ptr, sample, PER_SAMPLE: tl.constexpr):
    """A per-sample scalar as float32: ptr[sample] for a [B] tensor, or *ptr broadcast when PER_SAMPLE is False."""
    if PER_SAMPLE:
        return tl.load(ptr + sample).to(tl.float32)
    else:
        return tl.load(ptr).to(tl.float32)


def grid_1d(numel: int):
    return (triton.cdiv(numel, BLOCK),)
