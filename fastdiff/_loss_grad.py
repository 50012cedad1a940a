"""loss_error's autograd, shared by the compiled backends: their op returns (loss, dloss/dF), the forward pass
having computed the gradient's factor, so the backward pass is one elementwise product.

Only F gets a gradient (fastdiff.ops.loss_error refuses inputs that would need another).
"""
from __future__ import annotations

import torch


def setup_context(ctx, inputs, output):
    ctx.F_dtype = inputs[1].dtype
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zeros tensor for dloss_dF's (never used) gradient: 4 B/element saved


def backward(ctx, grad_loss, _grad_dloss_dF):
    (dloss_dF,) = ctx.saved_tensors
    if grad_loss is None or not ctx.needs_input_grad[1]:
        return None, None, None, None, None, None, None, None, None
    grad_F = (grad_loss * dloss_dF).to(ctx.F_dtype)
    return None, grad_F, None, None, None, None, None, None, None


def register_loss_error_autograd(op) -> None:
    """Register the backward above for a loss_error op with schema
    (y, F, seeds, offset, noise, sigma, c_skip, c_out, weight) -> (loss, dloss_dF)."""
    torch.library.register_autograd(op, backward, setup_context=setup_context)
