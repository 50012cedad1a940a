"""Reference op `churn`: noise injection x_hat = x + noise_std * eps with eps from fastdiff's generator
(docs/formulas.md#churn)."""
from __future__ import annotations

import torch

from ...rng import MASK32, normal_from_seeds
from .skip_mix import compute_dtype, per_sample


def churn(x: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor, noise_std: torch.Tensor) -> torch.Tensor:
    """x + noise_std * eps, eps = fastdiff.randn(seeds, x.shape, offset=offset); math in fp32 (fp64 for fp64 x), result in x's dtype.

    offset is an int64 tensor of one value; noise_std has one value or one per sample.
    """
    dtype = compute_dtype(x)
    eps = normal_from_seeds(seeds, x.shape, offset & MASK32, (offset >> 32) & MASK32, dtype)
    return (x.to(dtype) + per_sample(noise_std.to(dtype), x) * eps).to(x.dtype)
