"""Reference op `skip_mix`: the preconditioning-plus-skip mix D = c_skip(sigma) * x + c_out(sigma) * F
(docs/formulas.md#preconditioning)."""
from __future__ import annotations

import torch

from ..._codes import PRECOND_CODES, PRECONDS  # noqa: F401  (PRECOND_CODES: the compiled kernels' kind, for dispatch)
from ..._validate import check_choice


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for fp16/bf16/fp32 inputs, float64 if any input is float64: the math never runs below fp32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def per_sample(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-sample value of shape [B] (or a single value) so that it broadcasts over `like` of shape [B, ...]."""
    return c.reshape(-1, *([1] * (like.ndim - 1)))


def skip_coefficients(precond: str, sigma: torch.Tensor, sigma_data: float = 0.5):
    """(c_skip, c_out) of EDM Table 1: EDM sd^2/(s^2+sd^2), s sd/sqrt(s^2+sd^2); VP and iDDPM 1, -s; VE 1, s."""
    check_choice("precond", precond, PRECONDS)
    if precond == "edm":
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    elif precond in ("vp", "iddpm"):
        c_skip = torch.ones_like(sigma)
        c_out = -sigma
    else:  # "ve"
        c_skip = torch.ones_like(sigma)
        c_out = sigma
    return c_skip, c_out


def skip_mix(x: torch.Tensor, F: torch.Tensor, sigma: torch.Tensor, precond: str = "edm", sigma_data: float = 0.5) -> torch.Tensor:
    """D = c_skip(sigma) x + c_out(sigma) F with sigma of one value or one per sample; result fp32 (fp64 if x or F is)."""
    dtype = compute_dtype(x, F)
    c_skip, c_out = skip_coefficients(precond, sigma.to(dtype), sigma_data)
    return per_sample(c_skip, x) * x.to(dtype) + per_sample(c_out, x) * F.to(dtype)
