"""skip_mix's autograd, shared by the compiled backends (their ops compute the forward only).

dD/dx = c_skip and dD/dF = c_out elementwise; dD/dsigma goes through the reference coefficient formulas.
"""
from __future__ import annotations

import torch

from .reference.skip_mix import PRECOND_CODES, per_sample, skip_coefficients

KIND_NAMES = {code: name for name, code in PRECOND_CODES.items() if name != "iddpm"}


def setup_context(ctx, inputs, output):
    x, F, sigma, kind, sigma_data = inputs
    ctx.save_for_backward(x, F, sigma)
    ctx.kind, ctx.sigma_data = kind, sigma_data


def backward(ctx, grad):
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
    torch.library.register_autograd(op, backward, setup_context=setup_context)
