"""Reference op `euler_step`: one Euler step of the probability-flow ODE from t_hat to t_next (docs/formulas.md#euler-step)."""
from __future__ import annotations

import torch

from .skip_mix import compute_dtype, per_sample


def euler_step(x_hat: torch.Tensor, denoised: torch.Tensor, t_hat: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """x_hat + (t_next - t_hat) d_cur with d_cur = (x_hat - denoised) / t_hat; math in fp32 (fp64 for fp64 x_hat), result in x_hat's dtype."""
    dtype = compute_dtype(x_hat)
    x_hat_c = x_hat.to(dtype)
    t_hat, t_next = per_sample(t_hat.to(dtype), x_hat), per_sample(t_next.to(dtype), x_hat)
    d_cur = (x_hat_c - denoised.to(dtype)) / t_hat
    return (x_hat_c + (t_next - t_hat) * d_cur).to(x_hat.dtype)
