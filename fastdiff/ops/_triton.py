"""The Triton backend: fastdiff's Triton kernels registered as torch.library ops (namespace fastdiff_triton).

Importing this module imports triton; fastdiff imports it only when the Triton backend is first checked.
Each op is a `triton_op` (so torch.compile can see and optimize the kernels) with an explicit fake
implementation (shapes and dtypes only). `skip_mix` and `loss_error` also have autograd; the sampler ops do not need it.
"""
from __future__ import annotations

import torch
from torch.library import triton_op, wrap_triton

from .kernels.combine import launch_combine
from .kernels.euler_step import launch_euler_step
from .kernels.heun_step import launch_heun_step
from .kernels.loss import launch_loss_error, launch_loss_input
from .kernels.multistep_step import launch_multistep_step
from .kernels.randn import launch_noise
from .autograd import register_loss_error_autograd, register_skip_mix_autograd
from .kernels.skip_mix import launch_skip_mix


@triton_op("fastdiff_triton::randn", mutates_args=())
def randn(seeds: torch.Tensor, offset: torch.Tensor, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=seeds.device)
    return launch_noise(None, out, seeds, offset, None, wrap=wrap_triton)


@randn.register_fake
def _(seeds, offset, shape, dtype):
    return torch.empty(shape, dtype=dtype, device=seeds.device)


@triton_op("fastdiff_triton::churn", mutates_args=())
def churn(x: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor, noise_std: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return launch_noise(x, out, seeds, offset, noise_std, wrap=wrap_triton)


@churn.register_fake
def _(x, seeds, offset, noise_std):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@triton_op("fastdiff_triton::euler_step", mutates_args=())
def euler_step(x_hat: torch.Tensor, denoised: torch.Tensor, t_hat: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x_hat, memory_format=torch.contiguous_format)
    return launch_euler_step(x_hat, denoised, t_hat, t_next, out, wrap=wrap_triton)


@euler_step.register_fake
def _(x_hat, denoised, t_hat, t_next):
    return torch.empty_like(x_hat, memory_format=torch.contiguous_format)


@triton_op("fastdiff_triton::heun_step", mutates_args=())
def heun_step(x_hat: torch.Tensor, denoised: torch.Tensor, denoised_next: torch.Tensor, t_hat: torch.Tensor,
              t_next: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x_hat, memory_format=torch.contiguous_format)
    return launch_heun_step(x_hat, denoised, denoised_next, t_hat, t_next, out, wrap=wrap_triton)


@heun_step.register_fake
def _(x_hat, denoised, denoised_next, t_hat, t_next):
    return torch.empty_like(x_hat, memory_format=torch.contiguous_format)


@triton_op("fastdiff_triton::multistep_step", mutates_args=())
def multistep_step(x: torch.Tensor, denoised: torch.Tensor, denoised_prev: torch.Tensor, c: torch.Tensor,
                   t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return launch_multistep_step(x, denoised, denoised_prev, c, t, t_next, out, wrap=wrap_triton)


@multistep_step.register_fake
def _(x, denoised, denoised_prev, c, t, t_next):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@triton_op("fastdiff_triton::combine", mutates_args=())
def combine(x: torch.Tensor, h0: torch.Tensor | None, h1: torch.Tensor | None, h2: torch.Tensor | None,
            h3: torch.Tensor | None, coeffs: torch.Tensor, seeds: torch.Tensor | None, offset: torch.Tensor | None,
            noise: torch.Tensor | None) -> torch.Tensor:
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    return launch_combine(x, h0, h1, h2, h3, coeffs, seeds, offset, noise, out, wrap=wrap_triton)


@combine.register_fake
def _(x, h0, h1, h2, h3, coeffs, seeds, offset, noise):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@triton_op("fastdiff_triton::skip_mix", mutates_args=())
def skip_mix(x: torch.Tensor, F: torch.Tensor, sigma: torch.Tensor, kind: int, sigma_data: float) -> torch.Tensor:
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    return launch_skip_mix(x, F, sigma, kind, sigma_data, out, wrap=wrap_triton)


@skip_mix.register_fake
def _(x, F, sigma, kind, sigma_data):
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


register_skip_mix_autograd(skip_mix)


# The same kernels writing into a given `out` (which may be one of the inputs: every kernel is elementwise).
@triton_op("fastdiff_triton::churn_out", mutates_args=("out",))
def churn_out(x: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor, noise_std: torch.Tensor, out: torch.Tensor) -> None:
    launch_noise(x, out, seeds, offset, noise_std, wrap=wrap_triton)


@triton_op("fastdiff_triton::euler_step_out", mutates_args=("out",))
def euler_step_out(x_hat: torch.Tensor, denoised: torch.Tensor, t_hat: torch.Tensor, t_next: torch.Tensor,
                   out: torch.Tensor) -> None:
    launch_euler_step(x_hat, denoised, t_hat, t_next, out, wrap=wrap_triton)


@triton_op("fastdiff_triton::heun_step_out", mutates_args=("out",))
def heun_step_out(x_hat: torch.Tensor, denoised: torch.Tensor, denoised_next: torch.Tensor, t_hat: torch.Tensor,
                  t_next: torch.Tensor, out: torch.Tensor) -> None:
    launch_heun_step(x_hat, denoised, denoised_next, t_hat, t_next, out, wrap=wrap_triton)


@triton_op("fastdiff_triton::multistep_step_out", mutates_args=("out",))
def multistep_step_out(x: torch.Tensor, denoised: torch.Tensor, denoised_prev: torch.Tensor, c: torch.Tensor,
                       t: torch.Tensor, t_next: torch.Tensor, out: torch.Tensor) -> None:
    launch_multistep_step(x, denoised, denoised_prev, c, t, t_next, out, wrap=wrap_triton)


@triton_op("fastdiff_triton::combine_out", mutates_args=("out",))
def combine_out(x: torch.Tensor, h0: torch.Tensor | None, h1: torch.Tensor | None, h2: torch.Tensor | None,
                h3: torch.Tensor | None, coeffs: torch.Tensor, seeds: torch.Tensor | None, offset: torch.Tensor | None,
                noise: torch.Tensor | None, out: torch.Tensor) -> None:
    launch_combine(x, h0, h1, h2, h3, coeffs, seeds, offset, noise, out, wrap=wrap_triton)


@triton_op("fastdiff_triton::skip_mix_out", mutates_args=("out",))
def skip_mix_out(x: torch.Tensor, F: torch.Tensor, sigma: torch.Tensor, kind: int, sigma_data: float, out: torch.Tensor) -> None:
    launch_skip_mix(x, F, sigma, kind, sigma_data, out, wrap=wrap_triton)


for _op in (churn_out, euler_step_out, heun_step_out, multistep_step_out, combine_out, skip_mix_out):
    _op.register_fake(lambda *args: None)


@triton_op("fastdiff_triton::loss_input", mutates_args=())
def loss_input(y: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor | None,
               sigma: torch.Tensor, c_in: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(y, memory_format=torch.contiguous_format)
    return launch_loss_input(y, seeds, offset, noise, sigma, c_in, out, wrap=wrap_triton)


@loss_input.register_fake
def _(y, seeds, offset, noise, sigma, c_in):
    return torch.empty_like(y, memory_format=torch.contiguous_format)


@triton_op("fastdiff_triton::loss_error", mutates_args=())
def loss_error(y: torch.Tensor, F: torch.Tensor, seeds: torch.Tensor, offset: torch.Tensor, noise: torch.Tensor | None,
               sigma: torch.Tensor, c_skip: torch.Tensor, c_out: torch.Tensor,
               weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loss = torch.empty(y.shape, dtype=torch.float32, device=y.device)
    grad = torch.empty(y.shape, dtype=torch.float32, device=y.device)
    return launch_loss_error(y, F, seeds, offset, noise, sigma, c_skip, c_out, weight, loss, grad, wrap=wrap_triton)


@loss_error.register_fake
def _(y, F, seeds, offset, noise, sigma, c_skip, c_out, weight):
    return (torch.empty(y.shape, dtype=torch.float32, device=y.device),
            torch.empty(y.shape, dtype=torch.float32, device=y.device))


register_loss_error_autograd(loss_error)
