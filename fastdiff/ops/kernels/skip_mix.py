"""Triton kernel for op `skip_mix` (reference twin: fastdiff/ops/reference/skip_mix.py; docs/formulas.md#preconditioning)."""
import triton
import triton.language as tl

from ..._codes import PRECOND_EDM, PRECOND_VP
from ._utils import BLOCK, LAUNCH_OPTIONS, grid_1d, load_per_sample, sample_of

# fastdiff/_codes.py's codes as compile-time constants of the kernel (a jitted function reads only constexpr globals).
EDM = tl.constexpr(PRECOND_EDM)
VP = tl.constexpr(PRECOND_VP)

@triton.jit
def _skip_mix_kernel(x_ptr, F_ptr, sigma_ptr, out_ptr, numel, numel_per_sample, sigma_data,
                     KIND: tl.constexpr, PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr):
    """out = c_skip(sigma) x + c_out(sigma) F in float32, the coefficients of EDM Table 1 for KIND (fastdiff/_codes.py):
    EDM: c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2); VP/iDDPM: 1, -s; VE: 1, s.
    """
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    sample = sample_of(idx, numel, numel_per_sample) if PER_SAMPLE else 0
    sigma = load_per_sample(sigma_ptr, sample, PER_SAMPLE)
    if KIND == EDM:
        c_skip = sigma_data * sigma_data / (sigma * sigma + sigma_data * sigma_data)
        c_out = sigma * sigma_data / tl.sqrt_rn(sigma * sigma + sigma_data * sigma_data)
    elif KIND == VP:
        c_skip = 1.0
        c_out = -sigma
    else:  # VE
        c_skip = 1.0
        c_out = sigma
    x = tl.load(x_ptr + idx, mask=mask).to(tl.float32)
    F = tl.load(F_ptr + idx, mask=mask).to(tl.float32)
    tl.store(out_ptr + idx, (c_skip * x + c_out * F).to(out_ptr.dtype.element_ty), mask=mask)


def launch_skip_mix(x, F, sigma, kind: int, sigma_data: float, out, wrap=lambda kernel: kernel):
    """Write the skip mix into `out`; x, F contiguous of one shape, sigma of one value or one per sample."""
    numel = out.numel()
    if numel:
        wrap(_skip_mix_kernel)[grid_1d(numel)](
            x, F, sigma, out, numel, numel // out.shape[0], sigma_data,
            KIND=kind, PER_SAMPLE=sigma.numel() > 1, BLOCK=BLOCK, **LAUNCH_OPTIONS)
    return out
