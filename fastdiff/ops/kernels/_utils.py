"""Small device and host helpers shared by the kernel files."""
import triton
import triton.language as tl

BLOCK = 1024  # elements per program: 8 fp32 per thread at 4 warps, two 128-bit accesses per tensor
NUM_WARPS = 4
# Launch options pinned rather than left to Triton's defaults, which change between releases (3.10 turns
# fp fusion off by default): fused multiply-adds are kept, as the kernels' tolerances assume.
LAUNCH_OPTIONS = dict(num_warps=NUM_WARPS, enable_fp_fusion=True)
# The noise kernel keeps two Philox states per thread. Left to its default, the ptxas Triton runs for sm_90
# (with --regAllocOptLevel=2) packs it into 32 registers and spills 4 bytes; any explicit cap lets it take the
# 36-37 it needs with no spill; 128 leaves the per-element path its ~90 (checked by tests/test_triton_ptx.py).
NOISE_LAUNCH_OPTIONS = dict(LAUNCH_OPTIONS, maxnreg=128)


@triton.jit
def load_per_sample(ptr, sample, PER_SAMPLE: tl.constexpr):
    """A per-sample scalar as float32: ptr[sample] for a [B] tensor, or *ptr broadcast when PER_SAMPLE is False."""
    if PER_SAMPLE:
        return tl.load(ptr + sample).to(tl.float32)
    else:
        return tl.load(ptr).to(tl.float32)


@triton.jit
def sample_of(idx, numel, numel_per_sample):
    """The sample of each flat index, clamped to the last one: lanes past the end, masked for the data, must still
    not read per-sample values or seeds beyond their [B] tensors (an out-of-bounds address can fault on a GPU)."""
    return tl.minimum(idx // numel_per_sample, numel // numel_per_sample - 1)


def grid_1d(numel: int):
    return (triton.cdiv(numel, BLOCK),)
