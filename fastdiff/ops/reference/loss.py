"""Reference ops `loss_input` and `loss_error`: the elementwise work of a denoising loss, before and after the network.

With y the clean images, n unit-variance noise and per-sample coefficients of a preconditioner (EDM Table 1):
    loss_input:  x_in = c_in * (y + sigma * n)                              the network's input
    loss_error:  D = c_skip * (y + sigma * n) + c_out * F                   the denoiser's output
                 loss = weight * (D - y)^2,   dloss/dF = 2 * weight * c_out * (D - y)
n is either given or fastdiff's normal stream of each sample's seed at `offset` (as in op `churn`), so the
pass after the network draws the very noise the pass before it drew, without storing it
(docs/formulas.md#fused-loss-passes).
"""
from __future__ import annotations

import torch

from ...rng import MASK32, normal_from_seeds
from .skip_mix import compute_dtype, per_sample


def loss_noise(y: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor | None, dtype) -> torch.Tensor:
    """The loss's unit-variance noise: `noise` itself, or the stream of seeds[b] at `offset` (an int64 tensor)."""
    if noise is not None:
        return noise.to(dtype)
    return normal_from_seeds(seeds, y.shape, offset & MASK32, (offset >> 32) & MASK32, dtype)


def loss_input(y, seeds, offset, noise, sigma, c_in) -> torch.Tensor:
    """x_in = c_in * (y + sigma * n), in y's dtype (math in fp32, fp64 for fp64 y)."""
    dtype = compute_dtype(y)
    n = loss_noise(y, seeds, offset, noise, dtype)
    return (per_sample(c_in.to(dtype), y) * (y.to(dtype) + per_sample(sigma.to(dtype), y) * n)).to(y.dtype)


def loss_error(y, F, seeds, offset, noise, sigma, c_skip, c_out, weight) -> torch.Tensor:
    """weight * (c_skip * (y + sigma * n) + c_out * F - y)^2, fp32 (fp64 if y or F is); autograd gives dloss/dF."""
    dtype = compute_dtype(y, F)
    y32 = y.to(dtype)
    n = loss_noise(y, seeds, offset, noise, dtype)
    D = per_sample(c_skip.to(dtype), y) * (y32 + per_sample(sigma.to(dtype), y) * n) + per_sample(c_out.to(dtype), y) * F.to(dtype)
    return per_sample(weight.to(dtype), y) * (D - y32) ** 2
