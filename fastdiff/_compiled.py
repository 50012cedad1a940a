"""The Python half of the C++ backends: fake implementations and the autograd of skip_mix and loss_error for their
torch.library ops.

fastdiff._C (namespace fastdiff_cpu) and fastdiff._C_cuda (fastdiff_cuda) define the same ops with the same
schemas as the Triton backend; `register(namespace)` completes one of them for torch.compile and autograd.
"""
from __future__ import annotations

import torch

from ._loss_grad import register_loss_error_autograd
from ._skip_mix_grad import register_skip_mix_autograd


def register(namespace: str):
    """Register the fakes and the backwards of skip_mix and loss_error for `namespace`'s ops; return
    torch.ops.<namespace>."""

    @torch.library.register_fake(f"{namespace}::randn")
    def _(seeds, offset, shape, dtype):
        return torch.empty(shape, dtype=dtype, device=seeds.device)

    @torch.library.register_fake(f"{namespace}::churn")
    def _(x, seeds, offset, noise_std):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake(f"{namespace}::euler_step")
    def _(x_hat, denoised, t_hat, t_next):
        return torch.empty_like(x_hat, memory_format=torch.contiguous_format)

    @torch.library.register_fake(f"{namespace}::heun_step")
    def _(x_hat, denoised, denoised_next, t_hat, t_next):
        return torch.empty_like(x_hat, memory_format=torch.contiguous_format)

    @torch.library.register_fake(f"{namespace}::skip_mix")
    def _(x, F, sigma, kind, sigma_data):
        return torch.empty(x.shape, dtype=torch.float32, device=x.device)

    @torch.library.register_fake(f"{namespace}::loss_input")
    def _(y, seeds, offset, noise, sigma, c_in):
        return torch.empty_like(y, memory_format=torch.contiguous_format)

    @torch.library.register_fake(f"{namespace}::loss_error")
    def _(y, F, seeds, offset, noise, sigma, c_skip, c_out, weight):
        return (torch.empty(y.shape, dtype=torch.float32, device=y.device),
                torch.empty(y.shape, dtype=torch.float32, device=y.device))

    for name in ("churn_out", "euler_step_out", "heun_step_out", "skip_mix_out"):  # write into `out`, return nothing
        torch.library.register_fake(f"{namespace}::{name}")(_returns_nothing)

    register_skip_mix_autograd(f"{namespace}::skip_mix")
    register_loss_error_autograd(f"{namespace}::loss_error")
    return getattr(torch.ops, namespace)


def _returns_nothing(*args):
    return None
