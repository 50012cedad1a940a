"""Reference op `heun_step`: the Euler step from t_hat to t_next with Heun's second-order correction
(docs/formulas.md#heun-step)."""
from __future__ import annotations

import torch

from .skip_mix import compute_dtype, per_sample


def heun_step(x_hat: torch.Tensor, denoised: torch.Tensor, denoised_next: torch.Tensor, t_hat: torch.Tensor,
              t_next: torch.Tensor) -> torch.Tensor:
    """x_hat + (t_next - t_hat) (d_cur + d_prime) / 2; d_cur = (x_hat - denoised) / t_hat,
    x_next = x_hat + (t_next - t_hat) d_cur, d_prime = (x_next - denoised_next) / t_next.

    denoised = D(x_hat; t_hat) and denoised_next = D(x_next; t_next); x_next is recomputed, not passed.
    Math in fp32 (fp64 for fp64 x_hat), result in x_hat's dtype.
    """
    dtype = compute_dtype(x_hat)
    x_hat_c = x_hat.to(dtype)
    t_hat, t_next = per_sample(t_hat.to(dtype), x_hat), per_sample(t_next.to(dtype), x_hat)
    d_cur = (x_hat_c - denoised.to(dtype)) / t_hat
    x_next = x_hat_c + (t_next - t_hat) * d_cur
    d_prime = (x_next - denoised_next.to(dtype)) / t_next
    return (x_hat_c + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)).to(x_hat.dtype)
