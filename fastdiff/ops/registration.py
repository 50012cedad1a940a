"""The Python half of the C++ backends: the `fastdiff` op library, with fake implementations and the autograd of
skip_mix and loss_error registered once for every device.

fastdiff._C (csrc/bindings.cpp) defines the ops, with the Triton backend's schemas, and their CPU kernels;
fastdiff._C_cuda (csrc/cuda/) adds CUDA kernels to the same ops, and PyTorch's dispatcher picks one by the inputs'
device. Importing this module loads the CPU part (fastdiff/_ext.py: the installed one when it was built for this
torch, else a `fastdiff build` one) and raises ImportError with the reason when neither can be loaded; the backend
modules _cpu.py and _cuda.py import their functions from here.
"""
from __future__ import annotations

import torch

from .._ext import load
from .autograd import register_loss_error_autograd, register_skip_mix_autograd

NAMESPACE = "fastdiff"

load("cpu")  # defines torch.ops.fastdiff and registers its CPU kernels


@torch.library.register_fake(f"{NAMESPACE}::randn")
def _(seeds, offset, shape, dtype):
    return torch.empty(shape, dtype=dtype, device=seeds.device)


@torch.library.register_fake(f"{NAMESPACE}::churn")
def _(x, seeds, offset, noise_std):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::euler_step")
def _(x_hat, denoised, t_hat, t_next):
    return torch.empty_like(x_hat, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::heun_step")
def _(x_hat, denoised, denoised_next, t_hat, t_next):
    return torch.empty_like(x_hat, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::multistep_step")
def _(x, denoised, denoised_prev, c, t, t_next):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::combine")
def _(x, h0, h1, h2, h3, coeffs, seeds, offset, noise):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::skip_mix")
def _(x, F, sigma, kind, sigma_data):
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


@torch.library.register_fake(f"{NAMESPACE}::loss_input")
def _(y, seeds, offset, noise, sigma, c_in):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


@torch.library.register_fake(f"{NAMESPACE}::loss_error")
def _(y, F, seeds, offset, noise, sigma, c_skip, c_out, weight):
    return (torch.empty(y.shape, dtype=torch.float32, device=y.device),
            torch.empty(y.shape, dtype=torch.float32, device=y.device))


@torch.library.register_fake(f"{NAMESPACE}::stream_words")
def _(seeds, numel_per_sample, offset):
    return torch.empty(seeds.shape[0], numel_per_sample, dtype=torch.int64, device=seeds.device)


def _returns_nothing(*args):
    return None


for _name in ("churn_out", "euler_step_out", "heun_step_out", "multistep_step_out", "combine_out", "skip_mix_out"):  # write into `out`, return nothing
    torch.library.register_fake(f"{NAMESPACE}::{_name}")(_returns_nothing)

register_skip_mix_autograd(f"{NAMESPACE}::skip_mix")
register_loss_error_autograd(f"{NAMESPACE}::loss_error")

# The ops as the backend modules export them, with the Triton backend's names and signatures (stream_words: the raw
# Philox words, for bit-exact tests; CPU only).
__all__ = ["randn", "churn", "euler_step", "heun_step", "multistep_step", "combine", "skip_mix", "churn_out",
           "euler_step_out", "heun_step_out", "multistep_step_out", "combine_out", "skip_mix_out", "loss_input", "loss_error",
           "stream_words"]
globals().update({name: getattr(getattr(torch.ops, NAMESPACE), name) for name in __all__})
