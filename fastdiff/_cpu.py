"""The C++ CPU backend: the fastdiff_cpu ops of fastdiff._C (csrc/), with fake implementations and autograd.

Importing this module loads the compiled extension; it raises ImportError when the extension was not built
(fastdiff/backends.py turns that into a reason). The functions have the Triton backend's signatures.
"""
from __future__ import annotations

import torch

from . import _C  # noqa: F401  (registers torch.ops.fastdiff_cpu)
from ._skip_mix_grad import register_skip_mix_autograd

_ops = torch.ops.fastdiff_cpu
randn = _ops.randn
churn = _ops.churn
euler_step = _ops.euler_step
heun_step = _ops.heun_step
skip_mix = _ops.skip_mix
stream_words = _ops.stream_words


@torch.library.register_fake("fastdiff_cpu::randn")
def _(seeds, offset, shape, dtype):
    return torch.empty(shape, dtype=dtype, device=seeds.device)


@torch.library.register_fake("fastdiff_cpu::churn")
def _(x, seeds, offset, noise_std):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastdiff_cpu::euler_step")
def _(x_hat, denoised, t_hat, t_next):
    return torch.empty_like(x_hat, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastdiff_cpu::heun_step")
def _(x_hat, denoised, denoised_next, t_hat, t_next):
    return torch.empty_like(x_hat, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastdiff_cpu::skip_mix")
def _(x, F, sigma, kind, sigma_data):
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


@torch.library.register_fake("fastdiff_cpu::stream_words")
def _(seeds, numel_per_sample, offset):
    return torch.empty(seeds.shape[0], numel_per_sample, dtype=torch.int64, device=seeds.device)


register_skip_mix_autograd("fastdiff_cpu::skip_mix")
