"""Reference op `multistep_step`: DPM-Solver++(2M)'s step, the denoised extrapolated with the previous one and the
Euler step in one (docs/formulas.md#multistep-step)."""
from __future__ import annotations

import torch

from .skip_mix import compute_dtype, per_sample


def multistep_step(x: torch.Tensor, denoised: torch.Tensor, denoised_prev: torch.Tensor, c: torch.Tensor,
                   t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """D' + (t_next / t) (x - D') with D' = D + c (D - D_prev); math in fp32 (fp64 for fp64 x), result in x's dtype.

    The operations below, in this order and each rounded to the compute dtype, are the specification the compiled
    kernels follow (csrc/fastdiff_math.h multistep_step): diff = D - D_prev, D' = D + c diff, ratio = t_next / t
    (once per sample), out = D' + ratio (x - D'). No step is fused into a multiply-add.
    """
    dtype = compute_dtype(x)
    c, t, t_next = (per_sample(v.to(dtype), x) for v in (c, t, t_next))
    d = denoised.to(dtype)
    d_ext = d + c * (d - denoised_prev.to(dtype))
    ratio = t_next / t
    return (d_ext + ratio * (x.to(dtype) - d_ext)).to(x.dtype)
