"""The autograd of the compiled ops (C++ and Triton): their kernels compute the forward pass only, so the
backward passes of skip_mix and loss_error are registered here, once for every backend that compiles them.

skip_mix: dD/dx = c_skip and dD/dF = c_out elementwise; dD/dsigma goes through the reference coefficient formulas.
loss_error: the op returns (loss, dloss/dF), the forward pass having computed the gradient's factor, so the
backward pass is one elementwise product; only F gets a gradient (fastdiff.ops.loss_error refuses inputs that
would need another).
"""
from __future__ import annotations

import torch

from .reference.skip_mix import PRECOND_CODES, per_sample, skip_coefficients

KIND_NAMES = {code: name for name, code in PRECOND_CODES.items() if name != "iddpm"}


def _skip_mix_setup(ctx, inputs, output):
    x, F, sigma, kind, sigma_data = inputs
    ctx.save_for_backward(x, F, sigma)
    ctx.kind, ctx.sigma_data = kind, sigma_data


def _skip_mix_backward(ctx, grad):
    """dD/dx = c_skip, dD/dF = c_out (elementwise); dD/dsigma through the coefficient formulas, per sample."""
    x, F, sigma = ctx.saved_tensors
    with torch.enable_grad():  # backward runs with grad mode off; sigma's gradient goes through the formulas
        sigma_var = sigma.detach().to(torch.float32).requires_grad_(ctx.needs_input_grad[2])
        c_skip, c_out = skip_coefficients(KIND_NAMES[ctx.kind], sigma_var, ctx.sigma_data)
        grad_sigma = None
        if ctx.needs_input_grad[2]:
            dims = tuple(range(1, x.ndim)) if sigma.numel() > 1 else tuple(range(x.ndim))
            g_skip = (grad * x.to(torch.float32)).sum(dims)
            g_out = (grad * F.to(torch.float32)).sum(dims)
            (grad_sigma,) = torch.autograd.grad((c_skip * g_skip).sum() + (c_out * g_out).sum(), sigma_var)
            grad_sigma = grad_sigma.reshape(sigma.shape).to(sigma.dtype)
    grad_x = (per_sample(c_skip.detach(), x) * grad).to(x.dtype) if ctx.needs_input_grad[0] else None
    grad_F = (per_sample(c_out.detach(), x) * grad).to(F.dtype) if ctx.needs_input_grad[1] else None
    return grad_x, grad_F, grad_sigma, None, None


def register_skip_mix_autograd(op) -> None:
    """Register the backward above for a skip_mix op with schema (x, F, sigma, kind, sigma_data)."""
    torch.library.register_autograd(op, _skip_mix_backward, setup_context=_skip_mix_setup)


def _loss_error_setup(ctx, inputs, output):
    ctx.F_dtype = inputs[1].dtype
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zeros tensor for dloss_dF's (never used) gradient: 4 B/element saved


def _loss_error_backward(ctx, grad_loss, _grad_dloss_dF):
    (dloss_dF,) = ctx.saved_tensors
    if grad_loss is None or not ctx.needs_input_grad[1]:
        return None, None, None, None, None, None, None, None, None
    grad_F = (grad_loss * dloss_dF).to(ctx.F_dtype)
    return None, grad_F, None, None, None, None, None, None, None


def register_loss_error_autograd(op) -> None:
    """Register the backward above for a loss_error op with schema
    (y, F, seeds, offset, noise, sigma, c_skip, c_out, weight) -> (loss, dloss_dF)."""
    torch.library.register_autograd(op, _loss_error_backward, setup_context=_loss_error_setup)
