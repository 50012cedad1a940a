"""Reference op `skip_mix`: the preconditioning-plus-skip mix D = c_skip * x + c_out * F."""
from __future__ import annotations

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32 for fp16/bf16/fp32 inputs, float64 if any input is float64: the mix never runs below fp32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def per_sample(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View a per-sample coefficient of shape [B] so that it broadcasts over `like` of shape [B, ...]."""
    return c.reshape(-1, *([1] * (like.ndim - 1)))


def skip_mix(x: torch.Tensor, F: torch.Tensor, c_skip: torch.Tensor, c_out: torch.Tensor) -> torch.Tensor:
    """D = c_skip * x + c_out * F with per-sample c_skip, c_out of shape [B]; math and result in fp32 (fp64 if any input is)."""
    dtype = compute_dtype(x, F, c_skip, c_out)
    c_skip = per_sample(c_skip.to(dtype), x)
    c_out = per_sample(c_out.to(dtype), x)
    return c_skip * x.to(dtype) + c_out * F.to(dtype)
